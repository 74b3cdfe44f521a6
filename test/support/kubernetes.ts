// deploy/kubernetes rendered and read without a cluster: `kubectl kustomize`, the objects checked
// against the Kubernetes API schemas (kubernetes-models, @kubernetes-models/keda), pod templates
// and label selectors as the API server matches them.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field by the tests
  spec?: any;
  data?: Record<string, string>;
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{
    key: string;
    operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
    values?: string[];
  }>;
}

/** A workload's pod template, with where it runs. */
export interface PodTemplate {
  owner: K8sObject;
  namespace: string;
  labels: Record<string, string>;
  // biome-ignore lint/suspicious/noExplicitAny: a PodSpec
  spec: any;
}

export function kustomize(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: 'pipe' });
  return parseAllDocuments(out).map((d) => d.toJS() as K8sObject);
}

/** Throws with the schema's complaint when `obj` is not a valid object of its kind. */
export async function validateObject(obj: K8sObject): Promise<void> {
  const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
  const module =
    group === 'keda.sh'
      ? `@kubernetes-models/keda/keda.sh/${version}/${obj.kind}`
      : `kubernetes-models/${group ? `${group}/` : ''}${version}/${obj.kind}`;
  const models = (await import(module)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = models[obj.kind];
  if (!Model) throw new Error(`no schema for ${obj.apiVersion} ${obj.kind}`);
  new Model(obj).validate();
}

/** Whether `labels` satisfy `selector` (an empty selector selects everything). */
export function selects(selector: LabelSelector | undefined, labels: Record<string, string>): boolean {
  if (!selector) return false;
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  return (
    byLabels &&
    (selector.matchExpressions ?? []).every((e) => {
      const has = Object.hasOwn(labels, e.key);
      const value = labels[e.key] ?? '';
      switch (e.operator) {
        case 'In':
          return has && (e.values ?? []).includes(value);
        case 'NotIn':
          return !has || !(e.values ?? []).includes(value);
        case 'Exists':
          return has;
        case 'DoesNotExist':
          return !has;
      }
      return false;
    })
  );
}

export function podTemplates(objects: readonly K8sObject[]): PodTemplate[] {
  return objects.flatMap((o) => {
    const t = ['Deployment', 'StatefulSet', 'Job', 'DaemonSet'].includes(o.kind)
      ? o.spec?.template
      : undefined;
    return t
      ? [
          {
            owner: o,
            namespace: o.metadata.namespace ?? 'default',
            labels: t.metadata?.labels ?? {},
            spec: t.spec,
          },
        ]
      : [];
  });
}

/** The names of the workloads whose pods (in `namespace`) `selector` selects, sorted. */
export const selectedWorkloads = (
  pods: readonly PodTemplate[],
  namespace: string,
  selector: LabelSelector | undefined,
) =>
  pods
    .filter((p) => p.namespace === namespace && selects(selector, p.labels))
    .map((p) => p.owner.metadata.name)
    .sort();

export const DEPLOY_DIR = path.resolve(import.meta.dirname, '../../deploy/kubernetes');
