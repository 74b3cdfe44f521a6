// Which files of a tar export the worker holds as provenance: only where BuildKit writes it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { isProvenancePath, MAX_PROVENANCE_BYTES } from './provenance-files.js';
import { TarFileTap } from './tar-file-tap.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kiln-provenance-files-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('isProvenancePath', () => {
  test('one platform: the root file only', () => {
    assert.ok(isProvenancePath('provenance.json', 0));
    assert.ok(isProvenancePath('provenance.json', 1));
    assert.ok(!isProvenancePath('linux_amd64/provenance.json', 1));
    assert.ok(!isProvenancePath('app/provenance.json', 0));
    assert.ok(!isProvenancePath('xprovenance.json', 1));
  });

  test('several platforms: the file in each platform directory only', () => {
    assert.ok(isProvenancePath('linux_amd64/provenance.json', 2));
    assert.ok(isProvenancePath('linux_arm_v7/provenance.json', 8));
    assert.ok(!isProvenancePath('provenance.json', 2));
    assert.ok(!isProvenancePath('linux_amd64/app/provenance.json', 2));
  });

  test("a build's own files named provenance.json are not held, however many", () => {
    // What a hostile build could export: many large files of that name below the root.
    const root = path.join(dir, 'many');
    const big = Buffer.alloc(1024 * 1024, 'x');
    for (let i = 0; i < 20; i++) {
      mkdirSync(path.join(root, `d${i}`), { recursive: true });
      writeFileSync(path.join(root, `d${i}`, 'provenance.json'), big);
    }
    writeFileSync(path.join(root, 'provenance.json'), '{"buildkit":1}');
    const tar = execFileSync('tar', ['-c', '-C', root, '.'], { maxBuffer: 1 << 26 });
    const tap = new TarFileTap((name) => isProvenancePath(name, 1), MAX_PROVENANCE_BYTES);
    for (let pos = 0; pos < tar.length; pos += 64 * 1024) tap.write(tar.subarray(pos, pos + 64 * 1024));
    assert.deepEqual([...tap.files.keys()], ['provenance.json']);
    assert.equal(tap.files.get('provenance.json')?.toString(), '{"buildkit":1}');
  });
});
