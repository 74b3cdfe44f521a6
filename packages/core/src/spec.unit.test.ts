import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AppError } from './errors.js';
import { frontendAttrsFor, parseBuildSpec, recordsProvenance } from './spec.js';

const rejects = (input: object, pattern: RegExp) =>
  assert.throws(
    () => parseBuildSpec(input),
    (err: unknown) => err instanceof AppError && err.code === 'invalid_spec' && pattern.test(err.message),
  );

describe('parseBuildSpec', () => {
  test('docker --output syntax, defaults', () => {
    const s = parseBuildSpec({ output: 'type=tar,dest=app.tar' });
    assert.deepEqual(s, {
      output: { type: 'tar', dest: 'app.tar', attrs: {} },
      file: 'Dockerfile',
      buildArgs: {},
      labels: {},
      noCache: false,
      network: 'default',
    });
    assert.equal(parseBuildSpec({}).output.dest, 'output.tar');
  });

  test('a build arg named __proto__ is kept as an entry, from a list or an object', () => {
    const fromList = parseBuildSpec({ output: 'type=tar,dest=a.tar', buildArgs: ['__proto__=x'] });
    assert.deepEqual(Object.entries(fromList.buildArgs), [['__proto__', 'x']]);
    assert.equal(Object.getPrototypeOf(fromList.buildArgs), Object.prototype);
    const fromJson = parseBuildSpec(
      JSON.parse('{"output":"type=tar,dest=a.tar","buildArgs":{"__proto__":"y"}}'),
    );
    assert.deepEqual(Object.entries(fromJson.buildArgs), [['__proto__', 'y']]);
    assert.equal(frontendAttrsFor(fromList, 'p1')['build-arg:__proto__'], 'x');
    assert.match(JSON.stringify(fromJson), /"buildArgs":\{"__proto__":"y"\}/);
  });

  test('JSON output object and string, source alias, file normalization, args', () => {
    const s = parseBuildSpec({
      output: '{"type":"oci","dest":"img.tar","name":"x"}',
      source: 'builder',
      file: './docker/../build/App.dockerfile',
      buildArgs: ['A=1', 'B=x=y'],
      platform: 'linux/arm64/v8',
      noCache: 'true',
      network: 'none',
    });
    assert.equal(s.output.type, 'oci');
    assert.deepEqual(s.output.attrs, { name: 'x' });
    assert.equal(s.target, 'builder');
    assert.equal(s.file, 'build/App.dockerfile');
    assert.deepEqual(s.buildArgs, { A: '1', B: 'x=y' });
    assert.deepEqual(frontendAttrsFor(s, 'p1'), {
      filename: 'App.dockerfile',
      target: 'builder',
      platform: 'linux/arm64/v8',
      'no-cache': '',
      'force-network-mode': 'none',
      'build-arg:A': '1',
      'build-arg:B': 'x=y',
      'build-arg:BUILDKIT_CACHE_MOUNT_NS': 'kiln-p1',
      'add-hosts': 'kiln-p1.invalid=127.0.0.1',
    });
  });

  test('BUILDKIT_* build args are refused naming the arg, except the allow list', () => {
    rejects(
      { buildArgs: { BUILDKIT_CACHE_MOUNT_NS: 'other' } },
      /build arg "BUILDKIT_CACHE_MOUNT_NS" is reserved/,
    );
    rejects({ buildArgs: ['BUILDKIT_SYNTAX=evil/frontend'] }, /build arg "BUILDKIT_SYNTAX" is reserved/);
    rejects({ buildArgs: '{"buildkit_cache_mount_ns":"x"}' }, /"buildkit_cache_mount_ns" is reserved/);
    const s = parseBuildSpec({
      buildArgs: { BUILDKIT_INLINE_CACHE: '1', BUILDKIT_CONTEXT_KEEP_GIT_DIR: '1' },
    });
    assert.deepEqual(s.buildArgs, { BUILDKIT_INLINE_CACHE: '1', BUILDKIT_CONTEXT_KEEP_GIT_DIR: '1' });
  });

  test("the cache mount namespace is the project's, whatever a stored spec says", () => {
    const stored = { ...parseBuildSpec({}), buildArgs: { BUILDKIT_CACHE_MOUNT_NS: 'kiln-victim' } };
    assert.equal(frontendAttrsFor(stored, 'p2')['build-arg:BUILDKIT_CACHE_MOUNT_NS'], 'kiln-p2');
  });

  test('provenance takes buildx values and becomes attest:provenance', () => {
    for (const [given, mode] of [
      ['min', 'min'],
      ['mode=max', 'max'],
      [true, 'min'],
      ['true', 'min'],
    ] as const) {
      const spec = parseBuildSpec({ provenance: given });
      assert.equal(spec.provenance, mode);
      assert.equal(frontendAttrsFor(spec, 'p')['attest:provenance'], `mode=${mode}`);
    }
    for (const off of [false, 'false', '', undefined]) {
      const spec = parseBuildSpec({ provenance: off });
      assert.equal('provenance' in spec, false);
      assert.equal('attest:provenance' in frontendAttrsFor(spec, 'p'), false);
    }
    rejects({ provenance: 'full' }, /provenance must be "min" or "max"/);
    rejects({ provenance: 3 }, /provenance must be/);
    assert.equal(recordsProvenance(parseBuildSpec({ provenance: 'max' })), true);
    assert.equal(
      recordsProvenance(parseBuildSpec({ provenance: 'max', output: 'type=oci,dest=i.tar' })),
      false,
    );
    assert.equal(recordsProvenance(parseBuildSpec({})), false);
  });

  test('sourceDateEpoch: the field or the SOURCE_DATE_EPOCH build arg, held in one place', () => {
    const fromField = parseBuildSpec({ sourceDateEpoch: 1700000000 });
    const fromArg = parseBuildSpec({ buildArgs: { SOURCE_DATE_EPOCH: '1700000000' } });
    assert.deepEqual(fromArg, fromField);
    assert.equal(fromField.sourceDateEpoch, 1700000000);
    assert.deepEqual(fromArg.buildArgs, {});
    assert.equal(frontendAttrsFor(fromArg, 'p')['build-arg:SOURCE_DATE_EPOCH'], '1700000000');
    assert.equal(parseBuildSpec({ sourceDateEpoch: '0' }).sourceDateEpoch, 0);
    assert.equal(
      parseBuildSpec({ sourceDateEpoch: 5, buildArgs: { SOURCE_DATE_EPOCH: '5' } }).sourceDateEpoch,
      5,
    );
    rejects({ sourceDateEpoch: 5, buildArgs: { SOURCE_DATE_EPOCH: '6' } }, /disagree/);
    rejects({ sourceDateEpoch: -1 }, /sourceDateEpoch must be whole seconds/);
    rejects({ sourceDateEpoch: 1.5 }, /sourceDateEpoch must be/);
    rejects({ sourceDateEpoch: '1e9' }, /sourceDateEpoch must be/);
    rejects({ sourceDateEpoch: 253402300800 }, /sourceDateEpoch must be/);
    rejects({ buildArgs: { SOURCE_DATE_EPOCH: 'yesterday' } }, /buildArgs.SOURCE_DATE_EPOCH must be/);
  });

  test('mode on a tar output is explained as a cache-export option', () => {
    rejects({ output: 'type=tar,dest=a.tar,mode=max' }, /cache export/);
  });

  test('bad input gets a message naming the field', () => {
    rejects({ output: 'type=zip' }, /output type "zip" is not supported/);
    // Not a string, so not "type tar is not supported" from the array's text.
    rejects({ output: { type: ['tar'] } }, /output\.type must be a string/);
    rejects({ output: '{"type":["tar"]}' }, /output\.type must be a string/);
    rejects({ output: 'type=tar,dest=../x.tar' }, /plain file name/);
    // What the API takes, storage takes: these used to be accepted, then failed every attempt.
    for (const dest of ['app+1.tar', 'v@2.tar', '.app.tar', '-x.tar', '..', 'a b.tar'])
      rejects({ output: `type=tar,dest=${dest}` }, /plain file name/);
    assert.equal(parseBuildSpec({ output: 'type=tar,dest=_v1.2-rc_3.tar' }).output.dest, '_v1.2-rc_3.tar');
    rejects({ output: 'type=tar,dest' }, /not key=value/);
    rejects({ output: 42 }, /output must be/);
    rejects({ platform: 'amd64' }, /os\/arch/);
    rejects({ buildArgs: { 'A=B': 'x' } }, /buildArgs name "A=B"/);
    rejects({ buildArgs: { 'A\nB': 'x' } }, /buildArgs name/);
    rejects({ buildArgs: { A: 1 } }, /buildArgs.A must be a string/);
    rejects({ file: '../Dockerfile' }, /inside the context/);
    rejects({ file: '/etc/Dockerfile' }, /inside the context/);
    rejects({ target: 'a b' }, /valid stage name/);
    rejects({ target: 'a', source: 'b' }, /disagree/);
    rejects({ network: 'host' }, /network/);
    rejects({ noCache: 'maybe' }, /noCache/);
    rejects({ surprise: 1 }, /unknown spec field "surprise"/);
    rejects(
      { buildArgs: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`A${i}`, 'x'])) },
      /more than 200/,
    );
    rejects({ labels: { a: 'x'.repeat(70_000) } }, /longer than/);
  });
});
