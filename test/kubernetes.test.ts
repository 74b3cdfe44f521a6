// deploy/kubernetes cannot run here (no cluster, no image pulls), so every overlay is rendered
// with `kubectl kustomize` and checked instead: every object against the Kubernetes API schemas
// (KEDA's with its models and, for the metrics-api trigger, the fields KEDA reads); every variable
// Kiln's pods get is one packages/core/src/config.ts reads, and the API's environment loads; the
// network policies, Services, PDBs and spread constraints select the pods they mean; the worker's
// grace period matches KILN_SHUTDOWN_GRACE_SECONDS; the autoscalers read gauges /metrics has.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { CONFIG_VARIABLES, loadConfig, parseNetworks } from '@kiln/core';
import {
  DEPLOY_DIR,
  type K8sObject,
  kustomize,
  type PodTemplate,
  podTemplates,
  selectedWorkloads,
  validateObject,
} from './support/kubernetes.js';

const OVERLAYS = ['small', 'production'];
const KNOWN = new Set(CONFIG_VARIABLES);
const ROOT = path.resolve(DEPLOY_DIR, '../..');

/** The keys of the Secret `kiln`, as the example lists them. */
const SECRET_KEYS = readFileSync(path.join(DEPLOY_DIR, 'kiln-secret.example.env'), 'utf8')
  .split('\n')
  .filter((l) => /^[A-Z_]+=/.test(l))
  .map((l) => l.split('=')[0] as string);
const DRAIN_SH = readFileSync(path.join(DEPLOY_DIR, 'base/buildkitd/drain.sh'), 'utf8');
const GAUGES = readFileSync(path.join(ROOT, 'apps/api/src/builder-metrics.ts'), 'utf8');

const isKiln = (p: PodTemplate) => p.labels['app.kubernetes.io/name'] === 'kiln';
const component = (p: PodTemplate) => p.labels['app.kubernetes.io/component'];
const find = (objects: K8sObject[], kind: string, name: string) => {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `${kind} ${name}`);
  return o;
};

/** What the metrics-api scaler reads (KEDA 2.15's documentation of it); anything else is a typo. */
const METRICS_API_FIELDS = {
  required: ['url', 'valueLocation', 'targetValue'],
  allowed: [
    'url',
    'valueLocation',
    'targetValue',
    'activationTargetValue',
    'format',
    'authMode',
    'method',
    'keyParamName',
    'unsafeSsl',
  ],
  format: ['json', 'xml', 'yaml', 'prometheus'],
  authMode: ['apiKey', 'basic', 'bearer', 'tls'],
};

for (const overlay of OVERLAYS) {
  describe(`deploy/kubernetes/overlays/${overlay}`, () => {
    const objects = kustomize(path.join(DEPLOY_DIR, 'overlays', overlay));
    const pods = podTemplates(objects);
    const kilnPods = pods.filter((p) => isKiln(p));
    const namespace = find(objects, 'Namespace', 'kiln').metadata.name;

    test('every object is valid against its API schema, in the namespace', async () => {
      assert.ok(objects.length >= 15, `${objects.length} objects`);
      for (const o of objects) {
        await validateObject(o).catch((err: Error) => {
          throw new Error(`${o.kind} ${o.metadata.name}: ${err.message}`);
        });
        if (o.kind !== 'Namespace')
          assert.equal(o.metadata.namespace, namespace, `${o.kind} ${o.metadata.name}`);
      }
      assert.deepEqual(kilnPods.map((p) => `${p.owner.kind}/${component(p)}`).sort(), [
        'Deployment/api',
        'Deployment/worker',
        'Job/migrate',
        'StatefulSet/buildkitd',
      ]);
    });

    test("every variable Kiln's pods get is one config.ts reads, and the API's loads", () => {
      for (const key of SECRET_KEYS) assert.ok(KNOWN.has(key), `Secret key ${key}`);
      for (const p of kilnPods.filter((x) => component(x) !== 'buildkitd')) {
        for (const c of p.spec.containers) {
          const env: Record<string, string> = {};
          for (const from of c.envFrom ?? []) {
            if (from.secretRef) {
              assert.equal(from.secretRef.name, 'kiln');
              for (const key of SECRET_KEYS) env[key] = 'x';
            } else {
              const map = find(objects, 'ConfigMap', from.configMapRef.name);
              Object.assign(env, map.data);
            }
          }
          for (const e of c.env ?? []) env[e.name] = e.value;
          for (const name of Object.keys(env))
            assert.ok(KNOWN.has(name), `${p.owner.metadata.name}: ${name}`);
          assert.match(
            c.image,
            /^registry\.example\.com\/kiln:/,
            `${p.owner.metadata.name} runs the image set in the overlay`,
          );
          if (component(p) === 'api') {
            const config = loadConfig({
              ...env,
              DATABASE_URL: 'postgresql://kiln@db/kiln',
              REDIS_URL: 'redis://redis:6379',
              KILN_METRICS_TOKEN: 'm'.repeat(32),
              KILN_BUILDER_DRAIN_TOKEN: 'd'.repeat(32),
              KILN_OPERATOR_TOKEN: 'o'.repeat(32),
              KILN_CREDENTIALS_KEY: 'c'.repeat(32),
              KILN_CREDENTIALS_PREVIOUS_KEYS: 'p'.repeat(32),
            });
            assert.equal(config.storage.kind, 's3');
            // The workers' builder name is the headless Service, with its port.
            const [builder] = config.builders;
            const svc = find(objects, 'Service', 'kiln-buildkitd');
            assert.equal(svc.spec.clusterIP, 'None');
            assert.equal(
              builder?.address,
              `dns+tcp://kiln-buildkitd.${namespace}.svc.cluster.local:${svc.spec.ports[0].port}`,
            );
          }
        }
      }
    });

    test('buildkitd: its drain gets what drain.sh reads; grace periods cover the waits', () => {
      const bk = find(objects, 'StatefulSet', 'kiln-buildkitd');
      const [c] = bk.spec.template.spec.containers;
      const env = new Map<
        string,
        { value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }
      >(c.env.map((e: { name: string }) => [e.name, e]));
      for (const name of new Set(
        DRAIN_SH.match(/\$\{?DRAIN_[A-Z_]+/g)?.map((m) => m.replace(/^\$\{?/, '')),
      )) {
        assert.ok(env.has(name) || DRAIN_SH.includes(`\${${name}:-`), `drain.sh reads ${name}`);
      }
      for (const name of env.keys()) assert.ok(DRAIN_SH.includes(name), `${name} is read by drain.sh`);
      const token = env.get('DRAIN_TOKEN')?.valueFrom?.secretKeyRef;
      assert.deepEqual(token, { name: 'kiln', key: 'KILN_BUILDER_DRAIN_TOKEN' });
      assert.ok(SECRET_KEYS.includes('KILN_BUILDER_DRAIN_TOKEN'));
      assert.deepEqual(c.lifecycle.preStop.exec.command, ['/bin/sh', '/kiln/drain.sh']);
      const drainTimeout = Number(env.get('DRAIN_TIMEOUT_SECONDS')?.value);
      assert.ok(bk.spec.template.spec.terminationGracePeriodSeconds > drainTimeout);
      assert.equal(
        new URL(env.get('DRAIN_API_URL')?.value ?? '').port,
        String(find(objects, 'Service', 'kiln-api').spec.ports[0].port),
      );

      const worker = find(objects, 'Deployment', 'kiln-worker');
      const config = find(
        objects,
        'ConfigMap',
        worker.spec.template.spec.containers[0].envFrom[0].configMapRef.name,
      );
      assert.equal(
        worker.spec.template.spec.terminationGracePeriodSeconds,
        Number(config.data?.KILN_SHUTDOWN_GRACE_SECONDS) + 30,
        'the worker is killed only after KILN_SHUTDOWN_GRACE_SECONDS and 30 s to hand builds back',
      );
    });

    test('network policies, Services, PDBs and spread constraints select the pods they mean', () => {
      const policies = objects.filter((o) => o.kind === 'NetworkPolicy');
      const expected: Record<string, string[]> = {
        'kiln-api': ['kiln-api'],
        'kiln-worker': ['kiln-worker'],
        'kiln-migrate': ['kiln-migrate'],
        'kiln-buildkitd': ['kiln-buildkitd'],
      };
      assert.deepEqual(policies.map((p) => p.metadata.name).sort(), Object.keys(expected).sort());
      for (const p of policies) {
        assert.deepEqual(
          selectedWorkloads(pods, namespace, p.spec.podSelector),
          expected[p.metadata.name],
          p.metadata.name,
        );
        assert.ok(p.spec.policyTypes.includes('Ingress'));
      }
      for (const name of ['kiln-worker', 'kiln-migrate']) {
        assert.equal(
          find(objects, 'NetworkPolicy', name).spec.ingress,
          undefined,
          `${name} accepts no connection`,
        );
      }
      const bk = find(objects, 'NetworkPolicy', 'kiln-buildkitd');
      // Only workers reach buildkitd.
      for (const rule of bk.spec.ingress) {
        for (const peer of rule.from) {
          assert.deepEqual(Object.keys(peer), ['podSelector'], 'same namespace, pods only');
          assert.deepEqual(selectedWorkloads(pods, namespace, peer.podSelector), ['kiln-worker']);
        }
      }
      // buildkitd reaches DNS, the API, and public addresses: no private range (Redis, PostgreSQL).
      assert.deepEqual(bk.spec.policyTypes, ['Ingress', 'Egress']);
      const mustExcept = {
        4: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16'],
        6: ['fc00::/7', 'fe80::/10'],
      };
      for (const rule of bk.spec.egress) {
        for (const peer of rule.to) {
          if (peer.ipBlock) {
            const family = parseNetworks(peer.ipBlock.cidr)[0]?.family ?? 4;
            for (const cidr of mustExcept[family])
              assert.ok(peer.ipBlock.except?.includes(cidr), `${peer.ipBlock.cidr} excepts ${cidr}`);
          } else if (peer.namespaceSelector) {
            assert.deepEqual(peer.podSelector, { matchLabels: { 'k8s-app': 'kube-dns' } });
            assert.deepEqual(
              rule.ports.map((x: { port: number }) => x.port),
              [53, 53],
            );
            assert.deepEqual(selectedWorkloads(pods, namespace, peer.podSelector), []);
          } else {
            assert.deepEqual(selectedWorkloads(pods, namespace, peer.podSelector), ['kiln-api']);
            assert.deepEqual(
              rule.ports.map((x: { port: number }) => x.port),
              [8080],
            );
          }
        }
      }

      const selectors: Array<[string, string, unknown, string[]]> = [
        [
          'Service',
          'kiln-api',
          { matchLabels: find(objects, 'Service', 'kiln-api').spec.selector },
          ['kiln-api'],
        ],
        [
          'Service',
          'kiln-buildkitd',
          { matchLabels: find(objects, 'Service', 'kiln-buildkitd').spec.selector },
          ['kiln-buildkitd'],
        ],
        ...objects
          .filter((o) => o.kind === 'PodDisruptionBudget')
          .map((o): [string, string, unknown, string[]] => [
            'PodDisruptionBudget',
            o.metadata.name,
            o.spec.selector,
            [o.metadata.name],
          ]),
      ];
      for (const [kind, name, selector, want] of selectors) {
        assert.deepEqual(selectedWorkloads(pods, namespace, selector as never), want, `${kind} ${name}`);
      }
      const sts = find(objects, 'StatefulSet', 'kiln-buildkitd');
      assert.equal(sts.spec.serviceName, 'kiln-buildkitd');
      const spread = sts.spec.template.spec.topologySpreadConstraints;
      assert.deepEqual(
        spread.map((s: { topologyKey: string }) => s.topologyKey),
        ['kubernetes.io/hostname', 'topology.kubernetes.io/zone'],
      );
      for (const s of spread)
        assert.deepEqual(selectedWorkloads(pods, namespace, s.labelSelector), ['kiln-buildkitd']);
      for (const p of pods) {
        assert.equal(
          p.spec.automountServiceAccountToken,
          false,
          `${p.owner.metadata.name} needs no API token`,
        );
        // Service links would give every pod KILN_API_PORT and the like, which config.ts does not read.
        assert.equal(p.spec.enableServiceLinks, false, `${p.owner.metadata.name} gets no service links`);
      }
    });

    test('KEDA: scale targets exist, triggers read gauges /metrics has, with the metrics token', () => {
      const scaled = objects.filter((o) => o.kind === 'ScaledObject');
      if (overlay === 'small') {
        assert.deepEqual(scaled, [], 'the small overlay has no autoscaler');
        return;
      }
      assert.deepEqual(scaled.map((s) => s.spec.scaleTargetRef.name).sort(), [
        'kiln-buildkitd',
        'kiln-worker',
      ]);
      const auth = find(objects, 'TriggerAuthentication', 'kiln-metrics');
      assert.deepEqual(auth.spec.secretTargetRef, [
        { parameter: 'token', name: 'kiln', key: 'KILN_METRICS_TOKEN' },
      ]);
      const api = find(objects, 'Service', 'kiln-api');
      for (const s of scaled) {
        const target = find(objects, s.spec.scaleTargetRef.kind, s.spec.scaleTargetRef.name);
        assert.equal(target.spec.replicas, undefined, `KEDA owns ${target.metadata.name}'s replicas`);
        const names: string[] = [];
        for (const t of s.spec.triggers) {
          assert.equal(t.type, 'metrics-api');
          assert.equal(t.authenticationRef.name, auth.metadata.name);
          const keys = Object.keys(t.metadata);
          for (const k of METRICS_API_FIELDS.required)
            assert.ok(keys.includes(k), `${s.metadata.name}: ${k}`);
          for (const k of keys)
            assert.ok(METRICS_API_FIELDS.allowed.includes(k), `${s.metadata.name}: unknown ${k}`);
          assert.ok(METRICS_API_FIELDS.format.includes(t.metadata.format));
          assert.ok(METRICS_API_FIELDS.authMode.includes(t.metadata.authMode));
          assert.ok(Number(t.metadata.targetValue) > 0);
          assert.equal(
            t.metadata.url,
            `http://${api.metadata.name}.${namespace}.svc.cluster.local:${api.spec.ports[0].port}/metrics`,
          );
          assert.match(
            GAUGES,
            new RegExp(`'${t.metadata.valueLocation}'`),
            `/metrics has ${t.metadata.valueLocation}`,
          );
          names.push(t.name);
        }
        // The formula adds up trigger names only.
        const formula: string = s.spec.advanced.scalingModifiers.formula;
        assert.deepEqual(
          formula
            .split('+')
            .map((x) => x.trim())
            .sort(),
          names.sort(),
        );
        assert.ok(Number(s.spec.advanced.scalingModifiers.target) > 0);
      }
    });
  });
}
