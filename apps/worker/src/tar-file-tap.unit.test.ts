// TarFileTap against archives GNU tar writes in the formats Go's archive/tar uses (PAX, ustar
// with prefix, GNU long names), fed in chunks of every awkward size.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { TarFileTap } from './tar-file-tap.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kiln-tap-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// Over ustar's 100-byte name field, but splittable into its prefix.
const LONG_DIR = `${'d'.repeat(90)}/${'e'.repeat(40)}`;
const LONG_PLATFORM = 'p'.repeat(160);
const provenance = JSON.stringify({
  predicateType: 'https://slsa.dev/provenance/v0.2',
  pad: 'x'.repeat(3000),
});

function archive(format: 'pax' | 'ustar' | 'gnu'): Buffer {
  const root = path.join(dir, format);
  mkdirSync(path.join(root, LONG_DIR), { recursive: true });
  mkdirSync(path.join(root, 'linux_386'), { recursive: true });
  writeFileSync(path.join(root, 'big.bin'), Buffer.alloc(70_000, 7));
  writeFileSync(path.join(root, 'empty'), '');
  writeFileSync(path.join(root, 'provenance.json'), provenance);
  writeFileSync(path.join(root, 'linux_386', 'provenance.json'), '{"p":386}');
  writeFileSync(path.join(root, LONG_DIR, 'provenance.json'), 'deep: not wanted');
  if (format !== 'ustar') {
    // Its name is only in a PAX record or a GNU long-name entry (ustar cannot hold it).
    mkdirSync(path.join(root, LONG_PLATFORM), { recursive: true });
    writeFileSync(path.join(root, LONG_PLATFORM, 'provenance.json'), '{"long":1}');
  }
  return execFileSync('tar', ['-c', `--format=${format}`, '-C', root, '.'], { maxBuffer: 1 << 26 });
}

const wanted = (p: string) => /^([^/]+\/)?provenance\.json$/.test(p);

function feed(tar: Buffer, chunkSizes: number[], max = 1 << 20): TarFileTap {
  const tap = new TarFileTap(wanted, max);
  let pos = 0;
  let i = 0;
  while (pos < tar.length) {
    const n = chunkSizes[i++ % chunkSizes.length] ?? 1;
    tap.write(tar.subarray(pos, pos + n));
    pos += n;
  }
  return tap;
}

describe('TarFileTap', () => {
  for (const format of ['pax', 'ustar', 'gnu'] as const) {
    test(`${format}: keeps the wanted files whole, in any chunking`, () => {
      const tar = archive(format);
      for (const sizes of [[tar.length], [1], [511, 513], [7, 4096, 1000], [512]]) {
        const tap = feed(tar, sizes);
        const names = ['linux_386/provenance.json', 'provenance.json'];
        if (format !== 'ustar') names.push(`${LONG_PLATFORM}/provenance.json`);
        assert.deepEqual([...tap.files.keys()].sort(), names.sort());
        assert.equal(tap.files.get('provenance.json')?.toString(), provenance);
        assert.equal(tap.files.get('linux_386/provenance.json')?.toString(), '{"p":386}');
        assert.equal(tap.oversized, undefined);
      }
    });
  }

  for (const format of ['pax', 'ustar', 'gnu'] as const) {
    test(`${format}: a long path ending in provenance.json is read whole, so it is not wanted`, () => {
      const root = path.join(dir, `deep-${format}`);
      // ustar splits this into prefix and name; PAX and GNU need their own records for the other.
      const deep = format === 'ustar' ? LONG_DIR : `${'f'.repeat(160)}/g`;
      mkdirSync(path.join(root, deep), { recursive: true });
      writeFileSync(path.join(root, deep, 'provenance.json'), 'deep: not wanted');
      const tar = execFileSync('tar', ['-c', `--format=${format}`, '-C', root, '.']);
      const tap = feed(tar, [100]);
      assert.deepEqual([...tap.files.keys()], []);
    });
  }

  test('a wanted file over the bound is reported, not kept', () => {
    const tar = archive('pax');
    const tap = feed(tar, [4096], 1000);
    assert.equal(tap.files.has('provenance.json'), false);
    assert.equal(tap.oversized, 'provenance.json');
  });
});
