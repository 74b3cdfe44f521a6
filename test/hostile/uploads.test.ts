// Hostile and broken input against the real HTTP API (in this process, on real PostgreSQL, Redis
// and local storage; no worker runs, so nothing ever builds). Every bad request must get its exact
// 4xx status, a stable `error.code` and a message that names the problem, and must leave nothing
// behind: no job in BullMQ, no Build row, no temp file under <KILN_DATA_DIR>/tmp, no stored context
// object that no build refers to. After the corpus the server still answers.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { CONFIG_VARIABLES, loadConfig } from '@kiln/core';
import { bootstrapProject, buildApp } from '../../apps/api/src/index.js';
import {
  DOCKERFILE,
  dir,
  entry,
  file,
  hardlink,
  header,
  metaEntry,
  paxData,
  symlink,
  tar,
} from '../../packages/core/src/context/test-helpers.js';
import {
  errorOf,
  type Holdings,
  holdings,
  KiB,
  MiB,
  multipart,
  type RawResponse,
  rawExchange,
  request,
  revokeToken,
  settledTmpFiles,
  startApi,
  type TestApi,
  tmpFiles,
  waitFor,
} from './helpers.js';

/** The API under test has deliberately low limits so that the limit cases are cheap. */
const MAX_CONTEXT_BYTES = 4 * MiB;
const MAX_ENTRIES = 1000;

/** A context that is fine in every respect. */
const GOOD = tar([DOCKERFILE, file('a.txt', 'hello\n')]);
const TAR = 'application/x-tar';

type Check = 'status' | 'code' | 'message' | 'queue' | 'builds' | 'tmp' | 'orphans';

interface Case {
  name: string;
  send: () => Promise<RawResponse>;
  status: number;
  /** The expected `error.code` (not checked for accepted uploads). */
  code?: string;
  message?: RegExp;
  /** Not an error: the upload is a valid context and a build is queued (documented behaviour). */
  accepted?: boolean;
  /** More assertions on the answer. */
  extra?: (res: RawResponse) => void;
}

interface Outcome {
  res: RawResponse;
  before: Holdings;
  after: Holdings;
  newTmp: string[];
  newObjects: string[];
}

describe('hostile uploads', () => {
  let api: TestApi;
  const outcomes = new Map<string, Outcome>();
  /** Empty temp files a fast failure left behind (an open racing the clean-up; checked at the end). */
  const emptyLeaks: string[] = [];

  const auth = (token = api.token) => ({ authorization: `Bearer ${token}` });
  const postRaw = (query: string, body: Buffer, type: string | undefined = TAR, extra = {}) =>
    request(api.base, `/v1/builds${query}`, {
      method: 'POST',
      body,
      headers: { ...auth(), ...(type === undefined ? {} : { 'content-type': type }), ...extra },
    });
  const postForm = (query: string, parts: Parameters<typeof multipart>[0], extra = {}) => {
    const form = multipart(parts);
    return request(api.base, `/v1/builds${query}`, {
      method: 'POST',
      body: form.body,
      headers: { ...auth(), 'content-type': form.contentType, ...extra },
    });
  };
  const ctxPart = (data: Buffer = GOOD) => ({ name: 'context', filename: 'ctx.tar', value: data });

  /** Context objects in storage (content-addressed tars). */
  const contextObjects = async () =>
    fs.readdir(path.join(api.dataDir, 'objects/contexts/sha256')).catch(() => [] as string[]);

  before(async () => {
    api = await startApi({
      env: {
        KILN_MAX_CONTEXT_BYTES: String(MAX_CONTEXT_BYTES),
        KILN_MAX_CONTEXT_ENTRIES: String(MAX_ENTRIES),
      },
    });
  });
  after(async () => {
    await api?.close();
  });

  /** Registers one case: the request once, then its checks (buggy ones in a todo test). */
  function corpus(cases: Case[]): void {
    for (const c of cases) {
      const checks = (o: Outcome): Array<[Check, () => void]> => {
        const { res, before, after, newTmp, newObjects } = o;
        const err = errorOf(res);
        const desc = `${c.name}: ${res.status} ${res.text.slice(0, 300)}`;
        const delta = c.accepted ? 1 : 0;
        return [
          [
            'status',
            () => {
              assert.equal(res.status, c.status, desc);
              if (!c.accepted) assert.ok(res.status >= 400 && res.status < 500, desc);
            },
          ],
          [
            'code',
            () => {
              if (c.accepted || c.code === undefined) return;
              assert.ok(err, `not a {error: {code, message}} answer: ${desc}`);
              assert.equal(err.code, c.code, desc);
            },
          ],
          [
            'message',
            () => {
              if (c.accepted || !c.message) return;
              assert.match(err?.message ?? res.text, c.message, desc);
            },
          ],
          [
            'queue',
            () => {
              assert.equal(after.wait, before.wait + delta, `bull:kiln-builds:wait after ${c.name}`);
              assert.equal(after.jobs, before.jobs + delta, `BullMQ jobs after ${c.name}`);
            },
          ],
          ['builds', () => assert.equal(after.builds, before.builds + delta, `Build rows after ${c.name}`)],
          ['tmp', () => assert.deepEqual(newTmp, [], `temp files left by ${c.name}`)],
          [
            'orphans',
            () => {
              // A rejected request must not leave a context object no Build row refers to:
              // retention only finds contexts through Build rows, so it would stay forever.
              if (!c.accepted) assert.deepEqual(newObjects, [], `context objects stored by ${c.name}`);
            },
          ],
        ];
      };

      test(c.name, async () => {
        const tmpBefore = new Set(await tmpFiles(api));
        const objectsBefore = new Set(await contextObjects());
        const before = await holdings(api);
        const res = await c.send();
        const tmp = await settledTmpFiles(api);
        const newTmp = tmp.leftovers.filter((f) => !tmpBefore.has(f));
        for (const f of tmp.empty) if (!tmpBefore.has(f)) emptyLeaks.push(`${c.name}: ${f}`);
        const after = await holdings(api);
        const newObjects = (await contextObjects()).filter((f) => !objectsBefore.has(f));
        const outcome = { res, before, after, newTmp, newObjects };
        outcomes.set(c.name, outcome);
        // Every check runs (a failure does not hide the others), then the first failure is thrown.
        const failures: string[] = [];
        let first: unknown;
        for (const [name, check] of checks(outcome)) {
          try {
            check();
          } catch (err) {
            first ??= err;
            failures.push(`${name}: ${(err as Error).message.split('\n')[0]}`);
          }
        }
        if (first) {
          (first as Error).message += `\n  failed checks of "${c.name}":\n    ${failures.join('\n    ')}`;
          throw first;
        }
        c.extra?.(res);
      });
    }
  }

  describe('tarballs', () => {
    const names = (n: number) => {
      // A relative name of exactly n bytes, in 200-byte components (NAME_MAX is 255).
      const parts: string[] = [];
      let total = 0;
      while (total < n) {
        parts.push('a'.repeat(Math.max(1, Math.min(200, n - total - (parts.length ? 1 : 0)))));
        total = parts.join('/').length;
      }
      return parts.join('/');
    };
    // 16 gzip members of 64 MiB of zeros (about 1 MiB), after a header for a 3.5 MiB file:
    // within the size limit as declared, so only the ratio limit can stop it.
    let bomb = Buffer.alloc(0);
    let manyEntries = Buffer.alloc(0);
    before(() => {
      const zeros64 = gzipSync(Buffer.alloc(64 * MiB), { level: 9 });
      bomb = Buffer.concat([
        gzipSync(Buffer.concat([entry(DOCKERFILE), header({ name: 'zeros.bin', size: 3.5 * MiB })])),
        ...Array.from({ length: 16 }, () => zeros64),
      ]);
      const blocks: Buffer[] = [entry(DOCKERFILE)];
      for (let i = 0; i < 100_000; i++) blocks.push(header({ name: `f/${i}`, size: 0 }));
      manyEntries = gzipSync(tar(blocks), { level: 1 });
    });

    const invalid = (name: string, body: () => Buffer, message: RegExp, extra: Partial<Case> = {}): Case => ({
      name,
      send: () => postRaw('', body()),
      status: 400,
      code: 'invalid_context',
      message,
      ...extra,
    });

    corpus([
      invalid(
        'traversal: ../x',
        () => tar([DOCKERFILE, file('../x', 'x')]),
        /"\.\.\/x" contains a "\.\." component/,
      ),
      invalid(
        'absolute path /etc/x',
        () => tar([DOCKERFILE, file('/etc/x', 'x')]),
        /"\/etc\/x" is an absolute path/,
      ),
      invalid(
        'traversal: a/../../x',
        () => tar([DOCKERFILE, file('a/../../x', 'x')]),
        /"a\/\.\.\/\.\.\/x" contains a "\.\." component/,
      ),
      invalid(
        'traversal in a PAX path record (../../etc/passwd)',
        () => tar([DOCKERFILE, file('x', 'x', { pax: { path: '../../etc/passwd' } })]),
        /"\.\.\/\.\.\/etc\/passwd" contains a "\.\." component/,
      ),
      invalid(
        'traversal in a GNU long name (absolute, 150 bytes)',
        () => tar([DOCKERFILE, file(`/${'a'.repeat(150)}`, 'x', { long: 'gnu', format: 'gnu' })]),
        /is an absolute path/,
      ),
      invalid(
        'symlink to /etc, then a file written through it',
        () => tar([DOCKERFILE, symlink('a', '/etc'), file('a/passwd', 'root::0:0::/:/bin/sh\n')]),
        /entry "a\/passwd" would be written through "a", a symlink declared earlier/,
      ),
      invalid(
        'symlink to ../.., then a directory below it',
        () => tar([DOCKERFILE, symlink('up', '../..'), dir('up/b'), file('up/b/c', 'x')]),
        /would be written through "up", a symlink/,
      ),
      {
        // Documented: a symlink is data (never followed at upload or extraction), so one pointing
        // outside the context is accepted, as `docker build` accepts it.
        name: 'symlink pointing outside the context, alone: accepted',
        send: () =>
          postRaw('', tar([DOCKERFILE, symlink('etc-link', '/etc/passwd'), symlink('up', '../../..')])),
        status: 202,
        accepted: true,
      },
      invalid(
        'hard link to /etc/passwd',
        () => tar([DOCKERFILE, hardlink('x', '/etc/passwd')]),
        /the target of hard link "x", "\/etc\/passwd" is an absolute path/,
      ),
      invalid(
        'hard link to ../x',
        () => tar([DOCKERFILE, hardlink('x', '../x')]),
        /target of hard link "x", "\.\.\/x" contains a "\.\." component/,
      ),
      invalid(
        'hard link to an entry that is not in the archive',
        () => tar([DOCKERFILE, hardlink('x', 'etc/shadow')]),
        /hard link "x" points to "etc\/shadow", which is not an earlier entry/,
      ),
      invalid(
        'character device',
        () => tar([DOCKERFILE, { name: 'dev/null', type: '3' }]),
        /"dev\/null" is a character device/,
      ),
      invalid(
        'block device',
        () => tar([DOCKERFILE, { name: 'dev/sda', type: '4' }]),
        /"dev\/sda" is a block device/,
      ),
      invalid('fifo', () => tar([DOCKERFILE, { name: 'pipe', type: '6' }]), /"pipe" is a FIFO/),
      {
        // Documented: duplicates are allowed and the later entry wins, as with tar and docker.
        name: 'duplicate file entries: accepted, the later one wins',
        send: () => postRaw('', tar([DOCKERFILE, file('a', 'first'), file('a', 'second'), DOCKERFILE])),
        status: 202,
        accepted: true,
      },
      invalid(
        'duplicate: a directory replaced by a file',
        () => tar([DOCKERFILE, dir('d'), file('d/x', 'x'), file('d', 'oops')]),
        /entry "d" \(a regular file\) replaces the directory "d"/,
      ),
      invalid(
        'duplicate: the Dockerfile replaced by a symlink',
        () => tar([DOCKERFILE, symlink('Dockerfile', '/etc/passwd')]),
        /the Dockerfile path "Dockerfile" is a symlink in the context, not a regular file/,
      ),
      {
        name: 'gzip bomb (1 GiB of zeros in 1 MiB): stopped by the ratio limit, fast',
        send: () => postRaw('', bomb, 'application/gzip', {}),
        status: 413,
        code: 'context_too_large',
        message: /decompresses more than 100:1 \(maxDecompressionRatio\)/,
        extra: (res) => {
          assert.ok(res.ms < 3000, `answered after ${res.ms} ms`);
          // Stopped after inflating about the grace size (1 MiB), from a small part of the input.
          const m = /: (\d+) bytes from the first (\d+) compressed bytes/.exec(errorOf(res)?.message ?? '');
          assert.ok(m, errorOf(res)?.message);
          assert.ok(Number(m[1]) <= MiB + 64 * KiB, `inflated ${m[1]} bytes`);
          assert.ok(Number(m[2]) < bomb.length / 8, `read ${m[2]} of ${bomb.length} compressed bytes`);
        },
      },
      invalid(
        'truncated archive (ends inside a file)',
        () =>
          tar([DOCKERFILE, file('data', Buffer.alloc(3000, 1))], { end: false }).subarray(
            0,
            1024 + 512 + 1000,
          ),
        /the archive is truncated: entry "data" declares 3000 bytes but only 1000 follow/,
      ),
      invalid(
        'truncated gzip stream',
        () => {
          const gz = gzipSync(tar([DOCKERFILE, file('r', randomBytes(100 * KiB))]));
          return gz.subarray(0, gz.length - 1000);
        },
        /the gzip stream is truncated/,
      ),
      invalid(
        'not a tar at all',
        () => Buffer.from('this is not a tar at all, not even close\n'.repeat(30)),
        /the context is not a tar or gzip archive/,
      ),
      invalid('zero bytes', () => Buffer.alloc(0), /the context is empty \(0 bytes\)/),
      invalid(
        'huge PAX header (1 MiB)',
        () => Buffer.concat([metaEntry('x', paxData({ comment: 'x'.repeat(MiB) })), tar([DOCKERFILE])]),
        /the PAX extended header at offset 0 is \d+ bytes, more than the limit of 65536 bytes \(maxPaxHeaderBytes\)/,
      ),
      {
        name: `100k tiny entries (KILN_MAX_CONTEXT_ENTRIES=${MAX_ENTRIES})`,
        send: () => postRaw('', manyEntries, 'application/gzip'),
        status: 413,
        code: 'context_too_large',
        message: new RegExp(`the archive has more than ${MAX_ENTRIES} entries \\(maxEntries\\)`),
      },
      {
        // maxNameBytes is 4096 and every component stays under NAME_MAX (255): accepted.
        name: 'a 4000-byte name (PAX): accepted, under maxNameBytes (4096)',
        send: () => postRaw('', tar([DOCKERFILE, file(names(4000), 'x')])),
        status: 202,
        accepted: true,
      },
      invalid(
        'a 5000-byte name (GNU long name): over maxNameBytes',
        () => tar([DOCKERFILE, file(names(5000), 'x', { long: 'gnu', format: 'gnu' })]),
        /holds a 5001-byte name, longer than the limit of 4096 bytes \(maxNameBytes\)/,
      ),
      invalid(
        'a 256-byte path component (over NAME_MAX)',
        () => tar([DOCKERFILE, file(`d/${'n'.repeat(256)}`, 'x')]),
        /has a 256-byte path component; file names are limited to 255 bytes/,
      ),
      invalid(
        'non-UTF-8 name',
        () => tar([DOCKERFILE, file(Buffer.from('caf\xe9', 'latin1'), 'x')]),
        /the name of the entry at offset 1024 is not valid UTF-8: "caf\\xe9"/,
      ),
      invalid(
        'checksum mismatch in a header',
        () => tar([DOCKERFILE, file('bad', 'x', { checksumDelta: 1 })]),
        /tar header checksum mismatch at offset 1024/,
      ),
      invalid(
        'Dockerfile missing',
        () => tar([file('README', 'x')]),
        /^no Dockerfile at "Dockerfile" in the context$/,
      ),
      invalid(
        'Dockerfile is a directory',
        () => tar([dir('Dockerfile/'), file('Dockerfile/x', 'x')]),
        /the Dockerfile path "Dockerfile" is a directory in the context, not a regular file/,
      ),
      invalid(
        'Dockerfile is a symlink',
        () => tar([file('other', 'FROM scratch\n'), symlink('Dockerfile', 'other')]),
        /the Dockerfile path "Dockerfile" is a symlink in the context, not a regular file/,
      ),
      invalid(
        'gzip of garbage',
        () => gzipSync(randomBytes(8 * KiB)),
        /the gzip-compressed data is not a tar archive/,
      ),
      {
        name: 'zip file',
        send: () => postRaw('', Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), randomBytes(2000)])),
        status: 415,
        code: 'unsupported_media_type',
        message: /the context is a zip archive; send a tar archive or a gzip-compressed tar archive/,
      },
      {
        name: 'xz file',
        send: () =>
          postRaw('', Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), randomBytes(2000)])),
        status: 415,
        code: 'unsupported_media_type',
        message: /the context is xz-compressed data/,
      },
      {
        name: 'body over the size limit (raw tar)',
        send: () =>
          postRaw(
            '',
            Buffer.concat([
              tar([DOCKERFILE], { end: false }),
              entry(file('big', randomBytes(MAX_CONTEXT_BYTES))),
            ]),
          ),
        status: 413,
        code: 'context_too_large',
        message:
          /entry "big" declares 4194304 bytes, which takes the context past the limit of 4194304 bytes/,
      },
      {
        name: 'end-of-archive marker followed by zeros past the size limit',
        send: () => postRaw('', Buffer.concat([tar([DOCKERFILE]), Buffer.alloc(MAX_CONTEXT_BYTES)])),
        status: 413,
        code: 'context_too_large',
        message:
          /the context is larger than the limit of 4194304 bytes uncompressed \(maxUncompressedBytes\)/,
      },
      invalid(
        'an entry hidden after the end-of-archive marker',
        () => Buffer.concat([tar([DOCKERFILE]), entry(file('hidden', 'x'))]),
        /unexpected data at offset 2048, after the end-of-archive marker/,
      ),
      invalid(
        'a lone zero block followed by more entries',
        () => Buffer.concat([entry(DOCKERFILE), Buffer.alloc(512), entry(file('hidden', 'x'))]),
        /lone zero block at offset 1024 followed by more headers/,
      ),
      {
        // Each entry is small; the running total of inflated bytes crosses the limit.
        name: 'body over the size limit (gzip, many 512 KiB files)',
        send: () =>
          postRaw(
            '',
            gzipSync(
              tar([
                DOCKERFILE,
                ...Array.from({ length: 10 }, (_, i) => file(`r${i}`, randomBytes(512 * KiB))),
              ]),
            ),
            'application/gzip',
          ),
        status: 413,
        code: 'context_too_large',
        // At the header of the entry that crosses it, or at the running total: both name the limit.
        message: /(past|larger than) the limit of 4194304 bytes uncompressed \(maxUncompressedBytes\)/,
      },
      {
        // The worker holds a context's extended attributes in memory: each PAX header is within
        // its own limit, their sum is not.
        name: 'extended attributes over 1 MiB in all (maxXattrBytes)',
        send: () =>
          postRaw(
            '',
            tar([
              DOCKERFILE,
              ...Array.from({ length: 20 }, (_, i) =>
                file(`x${i}`, '', { pax: { 'SCHILY.xattr.user.blob': randomBytes(60 * KiB) } }),
              ),
            ]),
          ),
        status: 413,
        code: 'context_too_large',
        message:
          /the extended attributes kept up to entry "x17" take more than 1048576 bytes \(maxXattrBytes;/,
      },
    ]);
  });

  describe('specs', () => {
    const invalidSpec = (name: string, query: string, message: RegExp, extra: Partial<Case> = {}): Case => ({
      name,
      send: () => postRaw(query, GOOD),
      status: 400,
      code: 'invalid_spec',
      message,
      ...extra,
    });
    const enc = encodeURIComponent;
    corpus([
      invalidSpec(
        'unknown output type',
        '?output=type=zip,dest=a.zip',
        /output type "zip" is not supported; use one of tar, local, oci, docker/,
      ),
      invalidSpec(
        'mode=max on a tar output',
        '?output=type=tar,mode=max',
        /"mode" is not an option of the tar output: .*cache export/,
      ),
      invalidSpec('bad platform', '?platform=amd64', /platform "amd64" is not os\/arch\[\/variant\]/),
      invalidSpec(
        'bad platform (path traversal)',
        `?platform=${enc('linux/../../x')}`,
        /platform "linux\/\.\.\/\.\.\/x" is not os\/arch/,
      ),
      invalidSpec(
        'build-arg name with "="',
        `?buildArgs=${enc('{"A=B":"1"}')}`,
        /buildArgs name "A=B" is invalid/,
      ),
      invalidSpec(
        'build-arg name with a newline',
        `?buildArgs=${enc('{"A\\nB":"1"}')}`,
        /buildArgs name "A\nB" is invalid/,
      ),
      invalidSpec(
        'build-arg with an empty name (JSON)',
        `?buildArgs=${enc('{"":"1"}')}`,
        /buildArgs name "" is invalid/,
      ),
      invalidSpec(
        'build-arg with an empty name (docker style)',
        '?build-arg==1',
        /buildArgs entries must be "KEY=VALUE"/,
      ),
      {
        name: 'a 1 MB JSON spec field in multipart (a 1,000,000-byte label)',
        send: () =>
          postForm('', [
            { name: 'spec', value: JSON.stringify({ labels: { big: 'v'.repeat(1_000_000 - 30) } }) },
            ctxPart(),
          ]),
        status: 400,
        code: 'invalid_spec',
        message: /labels\.big is longer than 65536 characters/,
      },
      {
        name: 'a JSON spec field over the 1 MiB field limit (truncated by the parser)',
        send: () =>
          postForm('', [
            { name: 'spec', value: JSON.stringify({ target: 'x', pad: 'p'.repeat(MiB + 10) }) },
            ctxPart(),
          ]),
        status: 400,
        code: 'invalid_spec',
        message: /spec.*(too large|too long|larger|longer|limit|1048576|1 MiB)/i,
      },
      invalidSpec(
        '300 build-arg parameters',
        `?${Array.from({ length: 300 }, (_, i) => `build-arg=A${i}=1`).join('&')}`,
        /buildArgs has more than 200 entries/,
      ),
      invalidSpec('unknown query parameter', '?surprise=1', /unknown parameter "surprise"/),
      {
        name: 'unknown field in a JSON spec',
        send: () => postForm('', [{ name: 'spec', value: '{"output":"type=tar","surprise":1}' }, ctxPart()]),
        status: 400,
        code: 'invalid_spec',
        message: /unknown spec field "surprise"/,
      },
      {
        name: 'unknown form field',
        send: () => postForm('', [{ name: 'surprise', value: '1' }, ctxPart()]),
        status: 400,
        code: 'invalid_spec',
        message: /unknown spec field "surprise"/,
      },
      invalidSpec('noCache=maybe', '?noCache=maybe', /noCache must be true or false/),
      {
        name: 'buildArgs as a number (JSON spec)',
        send: () => postForm('', [{ name: 'spec', value: '{"buildArgs":5}' }, ctxPart()]),
        status: 400,
        code: 'invalid_spec',
        message: /buildArgs must be an object of strings/,
      },
      invalidSpec('buildArgs as a number (query)', '?buildArgs=5', /buildArgs must be a JSON object/),
      {
        name: 'spec field that is not JSON',
        send: () => postForm('', [{ name: 'spec', value: '{output: tar' }, ctxPart()]),
        status: 400,
        code: 'invalid_spec',
        message: /the "spec" field must be a JSON object/,
      },
      invalidSpec(
        'a repeated output parameter',
        '?output=type=tar,dest=a.tar&output=type=tar,dest=b.tar',
        /output is given more than once/,
      ),
      invalidSpec(
        'a dest with a path (../)',
        `?output=${enc('type=tar,dest=../../etc/app.tar')}`,
        /output dest "\.\.\/\.\.\/etc\/app\.tar" must be a plain file name/,
      ),
      invalidSpec(
        'a dest with a path (sub/)',
        `?output=${enc('type=tar,dest=sub/app.tar')}`,
        /output dest "sub\/app\.tar" must be a plain file name/,
      ),
      invalidSpec(
        'a Dockerfile path outside the context',
        `?file=${enc('../Dockerfile')}`,
        /file "\.\.\/Dockerfile" must be a path inside the context/,
      ),
      {
        name: 'a 10 KB Idempotency-Key',
        send: () => postRaw('', GOOD, TAR, { 'idempotency-key': 'k'.repeat(10_000) }),
        status: 400,
        code: 'invalid_request',
        message: /Idempotency-Key must be 1-255 printable ASCII characters/,
      },
      {
        name: 'an Idempotency-Key with a control character (TAB)',
        send: () => postRaw('', GOOD, TAR, { 'idempotency-key': 'deploy\t42' }),
        status: 400,
        code: 'invalid_request',
        message: /Idempotency-Key must be 1-255 printable ASCII characters/,
      },
      {
        // Node's client refuses to send \x01; written on a raw socket.
        name: 'an Idempotency-Key with a control character (\\x01, raw socket)',
        send: async () => {
          const head =
            'POST /v1/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n' +
            `Authorization: Bearer ${api.token}\r\nContent-Type: application/x-tar\r\n` +
            `Idempotency-Key: deploy\x0142\r\nContent-Length: ${GOOD.length}\r\n\r\n`;
          return parseRaw(await rawExchange(api.port, Buffer.concat([Buffer.from(head, 'latin1'), GOOD])));
        },
        // Node's HTTP parser refuses the header value before Fastify routes the request.
        status: 400,
        code: 'invalid_request',
        message: /Idempotency-Key|header/i,
      },
      {
        name: 'an HTTP/1.1 request without a Host header (raw socket)',
        send: async () => {
          const head =
            'POST /v1/builds HTTP/1.1\r\nConnection: close\r\n' +
            `Authorization: Bearer ${api.token}\r\nContent-Type: application/x-tar\r\n` +
            `Content-Length: ${GOOD.length}\r\n\r\n`;
          return parseRaw(await rawExchange(api.port, Buffer.concat([Buffer.from(head, 'latin1'), GOOD])));
        },
        status: 400,
        code: 'invalid_request',
        message: /Host header/,
      },
    ]);

    test('an Idempotency-Key used once (set-up for the next case)', async () => {
      const first = await postRaw('', GOOD, TAR, { 'idempotency-key': 'reuse-1' });
      assert.equal(first.status, 202, first.text);
    });
    corpus([
      {
        name: 'an Idempotency-Key reused with another context',
        send: () =>
          postRaw('', tar([DOCKERFILE, file('other', randomBytes(16).toString('hex'))]), TAR, {
            'idempotency-key': 'reuse-1',
          }),
        status: 409,
        code: 'conflict',
        message: /this Idempotency-Key was already used with a different request/,
      },
    ]);
  });

  describe('HTTP', () => {
    corpus([
      {
        // JSON names a remote (git) context; one without `git` is no context at all.
        name: 'Content-Type application/json without a git context',
        send: () => postRaw('', Buffer.from('{"output":"type=tar"}'), 'application/json'),
        status: 400,
        code: 'invalid_context',
        message:
          /a JSON body names a remote context, \{"git": .*or a stored one, \{"context".*upload a local context as application\/x-tar/,
      },
      {
        name: 'Content-Type application/json with a context that is not a digest',
        send: () => postRaw('', Buffer.from('{"context":"x"}'), 'application/json'),
        status: 400,
        code: 'invalid_context',
        message: /context must be a digest like "sha256:<64 hex digits>"/,
      },
      {
        name: 'Content-Type application/json with a digest this project never uploaded',
        send: () => postRaw('', Buffer.from(`{"context":"sha256:${'0'.repeat(64)}"}`), 'application/json'),
        status: 404,
        code: 'not_found',
        message: /this project has no stored context sha256:0{64} with Dockerfile: upload it/,
      },
      {
        name: 'Content-Type text/plain',
        send: () => postRaw('', GOOD, 'text/plain'),
        status: 415,
        code: 'unsupported_media_type',
        message: /send the context as application\/x-tar/,
      },
      {
        // Documented: without a Content-Type Fastify hands the body to the
        // application/octet-stream parser (RFC 9110 §8.3 lets a recipient assume octet-stream),
        // which is one of the raw context types; the bytes are sniffed, so a valid tar is accepted.
        name: 'no Content-Type, a valid tar: accepted as application/octet-stream',
        send: () => postRaw('', GOOD, undefined),
        status: 202,
        accepted: true,
      },
      {
        name: 'no Content-Type, not an archive',
        send: () => postRaw('', Buffer.from('{"context": "x"}'), undefined),
        status: 400,
        code: 'invalid_context',
        message: /the context is not a tar or gzip archive/,
      },
      {
        name: 'Content-Type image/png',
        send: () => postRaw('', GOOD, 'image/png'),
        status: 415,
        code: 'unsupported_media_type',
        message: /media type|content.type|send the context as/i,
      },
      {
        name: 'multipart without a context part',
        send: () => postForm('', [{ name: 'output', value: 'type=tar,dest=a.tar' }]),
        status: 400,
        code: 'invalid_context',
        message: /no "context" file part in the form/,
      },
      {
        name: 'multipart with the file under another name',
        send: () => postForm('', [{ name: 'upload', filename: 'ctx.tar', value: GOOD }]),
        status: 400,
        code: 'invalid_request',
        message: /unexpected file part "upload": send one part named "context"/,
      },
      {
        name: 'multipart with two files',
        // A context never sent before, so that storing it would show as a new object.
        send: () =>
          postForm('', [
            ctxPart(tar([DOCKERFILE, file('two-files', randomBytes(8).toString('hex'))])),
            { name: 'context', filename: 'again.tar', value: GOOD },
          ]),
        status: 400,
        code: 'invalid_request',
        message: /file part|one part named "context"|one file/,
      },
      {
        name: 'multipart with a field after the context part',
        send: () =>
          postForm('', [
            ctxPart(tar([DOCKERFILE, file('late', 'field-after')])),
            { name: 'target', value: 'x' },
          ]),
        status: 400,
        code: 'invalid_request',
        message: /field "target" must come before the context part/,
      },
      {
        name: 'multipart with 30 fields (over the fields limit of 20)',
        send: () =>
          postForm('', [
            ...Array.from({ length: 30 }, (_, i) => ({ name: `label`, value: `k${i}=v` })),
            ctxPart(),
          ]),
        status: 400,
        code: 'invalid_request',
        message: /field/i,
      },
      {
        name: 'a form field named __proto__',
        send: () => postForm('', [{ name: '__proto__', value: '{"noCache":true}' }, ctxPart()]),
        status: 400,
        code: 'invalid_request',
        message: /prototype|__proto__/i,
      },
      {
        name: 'a JSON spec with a __proto__ key',
        send: () =>
          postForm('', [
            { name: 'spec', value: '{"__proto__":{"noCache":true},"output":"type=tar"}' },
            ctxPart(),
          ]),
        status: 400,
        code: 'invalid_spec',
        message: /unknown spec field "__proto__"/,
      },
      {
        name: 'multipart Content-Type without a boundary',
        send: () => postRaw('', multipart([ctxPart()]).body, 'multipart/form-data'),
        status: 400,
        code: 'invalid_request',
        message: /boundary/i,
      },
      {
        name: 'multipart body cut before its closing boundary',
        send: () => {
          const form = multipart([ctxPart(tar([DOCKERFILE, file('cut', 'x'.repeat(5000))]))]);
          return request(api.base, '/v1/builds', {
            method: 'POST',
            body: form.body.subarray(0, form.body.length - 3000),
            headers: { ...auth(), 'content-type': form.contentType },
          });
        },
        status: 400,
        code: 'invalid_context',
        message: /truncated|end|did not complete/i,
      },
      {
        name: 'Content-Length and Transfer-Encoding together (raw socket)',
        send: async () => {
          const head =
            'POST /v1/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n' +
            `Authorization: Bearer ${api.token}\r\nContent-Type: application/x-tar\r\n` +
            `Content-Length: ${GOOD.length}\r\nTransfer-Encoding: chunked\r\n\r\n`;
          const body = Buffer.concat([
            Buffer.from(`${GOOD.length.toString(16)}\r\n`),
            GOOD,
            Buffer.from('\r\n0\r\n\r\n'),
          ]);
          return parseRaw(await rawExchange(api.port, Buffer.concat([Buffer.from(head, 'latin1'), body])));
        },
        status: 400,
        code: 'invalid_request',
        message: /Content-Length|Transfer-Encoding/i,
      },
      {
        name: 'multipart context over the size limit',
        send: () =>
          postForm('', [
            ctxPart(
              Buffer.concat([
                tar([DOCKERFILE], { end: false }),
                entry(file('big', randomBytes(MAX_CONTEXT_BYTES))),
              ]),
            ),
          ]),
        status: 413,
        code: 'context_too_large',
        message: /limit of 4194304 bytes|too large/,
      },
      {
        name: 'a 100 KB request header',
        send: () =>
          request(api.base, '/v1/builds', {
            method: 'POST',
            body: GOOD,
            headers: { ...auth(), 'content-type': TAR, 'x-padding': 'p'.repeat(100 * KiB) },
          }),
        status: 431,
        code: 'invalid_request',
        message: /header/i,
      },
      {
        name: 'invalid JSON body on a JSON route (POST /v1/builds/:id/cancel)',
        send: () =>
          request(api.base, '/v1/builds/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel', {
            method: 'POST',
            body: Buffer.from('{"reason": '),
            headers: { ...auth(), 'content-type': 'application/json' },
          }),
        status: 400,
        code: 'invalid_request',
        message: /JSON/,
      },
      {
        name: 'invalid JSON body on POST /v1/builds',
        send: () => postRaw('', Buffer.from('{"output": '), 'application/json'),
        status: 400,
        code: 'invalid_request',
        message: /JSON/,
      },
    ]);

    test('multipart with the spec part sent as application/json (curl -F "spec=...;type=application/json") is accepted', async () => {
      const res = await postForm('', [
        { name: 'spec', contentType: 'application/json', value: '{"output":"type=tar,dest=j.tar"}' },
        ctxPart(),
      ]);
      assert.equal(res.status, 202, res.text);
    });

    /** Sends a part of `body`, waits until the server is writing its temp file, then cuts the connection. */
    async function disconnectMidBody(body: Buffer, contentType: string) {
      const before = await holdings(api);
      const tmpBefore = new Set(await tmpFiles(api));
      const req = http.request({
        host: '127.0.0.1',
        port: api.port,
        method: 'POST',
        path: '/v1/builds',
        agent: false,
        headers: { ...auth(), 'content-type': contentType, 'transfer-encoding': 'chunked' },
      });
      req.on('error', () => undefined);
      let answered = false;
      req.on('response', () => {
        answered = true;
      });
      req.write(body.subarray(0, Math.floor(body.length / 2)));
      const file = await waitFor('the upload temp file', async () =>
        (await tmpFiles(api)).find((f) => !tmpBefore.has(f)),
      );
      req.socket?.destroy();
      req.destroy();
      const left = await waitFor(
        'the temp file to go',
        async () => ((await tmpFiles(api)).includes(file) ? false : 'gone'),
        5000,
      ).catch(() => 'still there');
      assert.equal(left, 'gone', `temp file ${file} left after the client went away`);
      assert.equal(answered, false);
      assert.deepEqual(await holdings(api), before);
      const health = await request(api.base, '/healthz');
      assert.equal(health.status, 200);
    }

    test('a chunked raw upload that stops halfway (client disconnects): temp file removed, nothing queued', async () => {
      await disconnectMidBody(tar([DOCKERFILE, file('r', randomBytes(2 * MiB))]), TAR);
    });

    test('a chunked multipart upload that stops halfway (client disconnects): temp file removed, nothing queued', async () => {
      const form = multipart([ctxPart(tar([DOCKERFILE, file('r', randomBytes(2 * MiB))]))]);
      await disconnectMidBody(form.body, form.contentType);
    });

    /** rawExchange, and how long until the server closed the connection (at most a minute). */
    async function timedExchange(port: number, talk: Parameters<typeof rawExchange>[1]) {
      const started = Date.now();
      const answer = await rawExchange(port, talk, 60_000);
      return { ms: Date.now() - started, answer };
    }

    /** Runs `fn` against a second API listening with these configuration variables. */
    async function withConfiguredApi(vars: Record<string, string>, fn: (port: number) => Promise<void>) {
      const config = loadConfig({
        ...Object.fromEntries(Object.entries(process.env)),
        DATABASE_URL: api.deps.config.databaseUrl,
        REDIS_URL: api.deps.config.redisUrl,
        KILN_SIGNING_KEY: 'h'.repeat(40),
        KILN_DATA_DIR: api.dataDir,
        ...vars,
      });
      const app = await buildApp({ ...api.deps, config });
      await app.listen({ port: 0, host: '127.0.0.1' });
      try {
        await fn((app.server.address() as net.AddressInfo).port);
      } finally {
        await app.close();
      }
    }

    /** An upload of `body` (a tar) whose bytes the caller writes; `answered` is its status. */
    function startUpload(port: number, body: Buffer) {
      const slow = http.request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/builds?output=type=tar,dest=a.tar',
        agent: false,
        headers: { ...auth(), 'content-type': TAR, 'content-length': String(body.length) },
      });
      const answered = new Promise<number>((resolve, reject) => {
        slow.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        slow.on('error', reject);
      });
      return { slow, answered };
    }

    const rawHead = (type: string, length: number) =>
      `POST /v1/builds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${api.token}\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\n\r\n`;

    /** Runs `fn`, then checks that the upload's temp file it made is gone and nothing was queued. */
    async function leavesNothing(fn: () => Promise<void>) {
      const before = await holdings(api);
      const tmpBefore = new Set(await tmpFiles(api));
      await fn();
      await waitFor(
        'the temp file to go',
        async () => (await tmpFiles(api)).every((f) => tmpBefore.has(f)),
        5000,
      );
      assert.deepEqual(await holdings(api), before);
      assert.equal((await request(api.base, '/healthz')).status, 200);
    }

    for (const kind of ['raw', 'multipart'] as const) {
      test(`slowloris: a ${kind} upload that stalls is answered 408 at KILN_CONNECTION_TIMEOUT_SECONDS; its temp file goes`, async () => {
        const tmpBefore = new Set(await tmpFiles(api));
        const form = multipart([ctxPart(tar([DOCKERFILE, file('s', randomBytes(256 * 1024))]))]);
        const [type, body] = kind === 'raw' ? [TAR, GOOD] : [form.contentType, form.body];
        await leavesNothing(() =>
          withConfiguredApi({ KILN_CONNECTION_TIMEOUT_SECONDS: '2' }, async (port) => {
            const closed = timedExchange(
              port,
              Buffer.concat([
                Buffer.from(rawHead(type, body.length + MiB)),
                // A few bytes (raw), or the form up to the middle of its file part, then nothing.
                kind === 'raw' ? body.subarray(0, 700) : body.subarray(0, body.length - 64 * 1024),
              ]),
            );
            await waitFor('the upload temp file', async () =>
              (await tmpFiles(api)).some((f) => !tmpBefore.has(f)),
            );
            const { ms, answer } = await closed;
            assert.match(answer, /^HTTP\/1\.1 408 /);
            assert.match(answer, /"code":"request_timeout","message":"the upload sent nothing for 2 s"/);
            // Bounded only to show that it ends: 2 s idle, then up to 2 s of draining.
            assert.ok(ms < 20_000, `closed after ${ms} ms`);
          }),
        );
      });
    }

    test('a project has at most KILN_MAX_UPLOADS_PER_PROJECT uploads in progress: the next waits its turn, other projects go on', async () => {
      await withConfiguredApi({ KILN_MAX_UPLOADS_PER_PROJECT: '1' }, async (port) => {
        const tmpBefore = new Set(await tmpFiles(api));
        const { slow, answered } = startUpload(port, GOOD);
        slow.write(GOOD.subarray(0, 700));
        await waitFor('the upload temp file', async () =>
          (await tmpFiles(api)).some((f) => !tmpBefore.has(f)),
        );
        // Another context than GOOD: the other project's list must not show GOOD's digest (below).
        const body = new Uint8Array(tar([DOCKERFILE, file('slots.txt', 'upload slots\n')]));
        const post = (token: string) =>
          fetch(`http://127.0.0.1:${port}/v1/builds?output=type=tar,dest=b.tar`, {
            method: 'POST',
            body,
            headers: { ...auth(token), 'content-type': TAR },
          });
        let waitingAnswered = false;
        const waiting = post(api.token).then((res) => {
          waitingAnswered = true;
          return res.status;
        });
        assert.equal((await post(api.otherToken)).status, 202, 'another project is not held up');
        assert.equal(waitingAnswered, false, 'the second upload of the project waits for the first');
        slow.end(GOOD.subarray(700));
        assert.equal(await answered, 202);
        assert.equal(await waiting, 202);
      });
    });

    test('an upload waiting its turn longer than KILN_CONNECTION_TIMEOUT_SECONDS gets its answer (it was cut without one)', async () => {
      await withConfiguredApi(
        { KILN_MAX_UPLOADS_PER_PROJECT: '1', KILN_CONNECTION_TIMEOUT_SECONDS: '2' },
        async (port) => {
          const tmpBefore = new Set(await tmpFiles(api));
          const { slow, answered } = startUpload(port, GOOD);
          slow.write(GOOD.subarray(0, 700));
          await waitFor('the upload temp file', async () =>
            (await tmpFiles(api)).some((f) => !tmpBefore.has(f)),
          );
          // The first upload goes on sending, a byte a second, for 5 s: never idle itself.
          let sent = 700;
          const drip = setInterval(() => slow.write(GOOD.subarray(sent, ++sent)), 1000);
          const waiting = request(`http://127.0.0.1:${port}`, '/v1/builds?output=type=tar,dest=w.tar', {
            method: 'POST',
            body: GOOD,
            headers: { ...auth(api.token), 'content-type': TAR },
          });
          await delay(5000);
          clearInterval(drip);
          slow.end(GOOD.subarray(sent));
          assert.equal(await answered, 202);
          const res = await waiting;
          assert.equal(res.status, 202, res.text);
        },
      );
    });

    test("KILN_UPLOAD_SPOOL_BYTES bounds the temp files of uploads in progress, of which one project takes half: its next upload is 429, another project's goes on", async () => {
      await withConfiguredApi(
        { KILN_MAX_CONTEXT_BYTES: String(MiB), KILN_UPLOAD_SPOOL_BYTES: String(2 * MiB) },
        async (port) => {
          const big = tar([DOCKERFILE, file('spool.bin', randomBytes(900 * 1024))]);
          const tmpBefore = new Set(await tmpFiles(api));
          const { slow, answered } = startUpload(port, big);
          slow.write(big.subarray(0, big.length - 1024));
          // Most of it in its temp file: ~0.9 of the project's 1 MiB half.
          await waitFor('the upload temp file', async () => {
            for (const f of await tmpFiles(api)) {
              if (tmpBefore.has(f)) continue;
              const size = (await fs.stat(path.join(api.tmpDir, f)).catch(() => undefined))?.size ?? 0;
              if (size > 800 * 1024) return true;
            }
            return false;
          });
          const body = new Uint8Array(tar([DOCKERFILE, file('spool-small.bin', randomBytes(300 * 1024))]));
          const post = (token: string) =>
            request(`http://127.0.0.1:${port}`, '/v1/builds?output=type=tar,dest=b.tar', {
              method: 'POST',
              body: Buffer.from(body),
              headers: { ...auth(token), 'content-type': TAR },
            });
          const mine = await post(api.token);
          assert.equal(mine.status, 429, mine.text);
          assert.equal(errorOf(mine)?.code, 'rate_limited');
          assert.match(errorOf(mine)?.message ?? '', /take half the room for them \(KILN_UPLOAD_SPOOL_BYTES/);
          const theirs = await post(api.otherToken);
          assert.equal(theirs.status, 202, theirs.text);
          slow.end(big.subarray(big.length - 1024));
          assert.equal(await answered, 202);
          // The room is given back with the upload: the same one now fits.
          assert.equal((await post(api.token)).status, 202);
        },
      );
    });

    test('stored-bytes quota: an upload that can only be refused is answered 429 before it has all arrived; a retry of what the project holds is not', async () => {
      const name = 'quota-early';
      const token = await bootstrapProject(api.db.url, name);
      const setQuota = (bytes: number) =>
        api.deps.db.project.update({ where: { name }, data: { maxStoredBytes: BigInt(bytes) } });
      const big = tar([DOCKERFILE, file('big', Buffer.alloc(64 * MiB))]);
      const form = multipart([ctxPart(big)]);
      await withConfiguredApi({ KILN_MAX_CONTEXT_BYTES: String(128 * MiB) }, async (port) => {
        const base = `http://127.0.0.1:${port}`;
        const post = (body: Buffer, type: string, key?: string) =>
          request(base, '/v1/builds?output=type=tar,dest=a.tar', {
            method: 'POST',
            body,
            headers: { ...auth(token), 'content-type': type, ...(key ? { 'idempotency-key': key } : {}) },
          });
        await setQuota(MiB);
        const first = await post(GOOD, TAR, 'quota-early-1');
        assert.equal(first.status, 202, first.text);
        // Over its quota now: a retry of the same request still gets its build.
        await setQuota(1);
        const retry = await post(GOOD, TAR, 'quota-early-1');
        assert.equal(retry.status, 200, retry.text);
        for (const [type, body] of [
          [TAR, big],
          [form.contentType, form.body],
        ] as const) {
          await leavesNothing(async () => {
            const res = await post(body, type);
            assert.equal(res.status, 429, res.text);
            assert.equal(errorOf(res)?.code, 'quota_exceeded');
            assert.match(
              errorOf(res)?.message ?? '',
              /this upload already brings \d+ bytes.*stored bytes: 1\)/,
            );
            // The answer waits for up to 16 MiB more to be read and dropped (errors.ts), so that
            // the client sees it rather than a reset; the rest is never sent.
            assert.ok(
              res.bodyBytesSent < body.length / 2,
              `answered after ${res.bodyBytesSent} of ${body.length} bytes`,
            );
          });
        }
      });
    });

    test('slowloris: the request/connection timeouts can be configured', async () => {
      const variable = CONFIG_VARIABLES.find((v) =>
        /^KILN_.*(REQUEST|CONNECTION|UPLOAD|IDLE|BODY).*TIMEOUT/.test(v),
      );
      assert.ok(variable, `no upload timeout among ${CONFIG_VARIABLES.join(', ')}`);
      // With it set to 1 (second), a stalled upload is answered and cut within a few seconds.
      await leavesNothing(() =>
        withConfiguredApi({ [variable]: '1' }, async (port) => {
          const { ms, answer } = await timedExchange(port, Buffer.from(`${rawHead(TAR, 100000)}abc`));
          assert.ok(ms < 20_000, `the stalled upload was cut after ${ms} ms`);
          assert.match(answer, /^HTTP\/1\.1 408 .*"code":"request_timeout"/s);
        }),
      );
    });

    test('slowloris: an upload still dripping in at the request deadline is answered 408', async () => {
      await leavesNothing(() =>
        withConfiguredApi({ KILN_REQUEST_TIMEOUT_SECONDS: '1' }, async (port) => {
          const { ms, answer } = await timedExchange(port, (socket) => {
            socket.write(rawHead(TAR, GOOD.length));
            // One byte every 100 ms: never idle for the connection timeout, always too slow.
            let sent = 0;
            const drip = setInterval(() => {
              if (sent < GOOD.length && socket.writable) socket.write(GOOD.subarray(sent, ++sent));
            }, 100);
            socket.on('close', () => clearInterval(drip));
          });
          assert.ok(ms < 20_000, `closed after ${ms} ms`);
          assert.match(answer, /^HTTP\/1\.1 408 /);
          assert.match(answer, /"code":"request_timeout","message":"the upload took longer than 1 s"/);
        }),
      );
    });

    test('an upload answered 408 while it still arrives gives back all its room once read: the next one fits', async () => {
      const vars = {
        KILN_REQUEST_TIMEOUT_SECONDS: '1',
        KILN_MAX_CONTEXT_BYTES: String(MiB),
        KILN_UPLOAD_SPOOL_BYTES: String(2 * MiB),
      };
      await withConfiguredApi(vars, async (port) => {
        const tmpBefore = new Set(await tmpFiles(api));
        const big = tar([DOCKERFILE, file('drip.bin', randomBytes(MiB - 16 * 1024))]);
        const { answer } = await timedExchange(port, (socket) => {
          socket.write(rawHead(TAR, big.length));
          // 24 KiB every 100 ms: ~0.25 MiB by the deadline, ~0.5 MiB more while the 408 goes out.
          let sent = 0;
          const drip = setInterval(() => {
            if (sent >= big.length || !socket.writable) return;
            socket.write(big.subarray(sent, sent + 24 * 1024));
            sent += 24 * 1024;
          }, 100);
          socket.on('close', () => clearInterval(drip));
        });
        assert.match(answer, /^HTTP\/1\.1 408 /);
        await waitFor('the temp file to go', async () =>
          (await tmpFiles(api)).every((f) => tmpBefore.has(f)),
        );
        // 0.9 MiB fits in the project's half (1 MiB) only when none of the first is still counted.
        const res = await request(`http://127.0.0.1:${port}`, '/v1/builds?output=type=tar,dest=b.tar', {
          method: 'POST',
          body: tar([DOCKERFILE, file('after.bin', randomBytes(900 * 1024))]),
          headers: { ...auth(api.token), 'content-type': TAR },
        });
        assert.equal(res.status, 202, res.text);
      });
    });
  });

  describe('auth', () => {
    let buildId = '';
    let succeededId = '';
    let digest = '';
    let revoked = '';
    const routes = () =>
      [
        ['POST', '/v1/builds'],
        ['GET', '/v1/builds'],
        ['GET', `/v1/builds/${buildId}`],
        ['POST', `/v1/builds/${buildId}/cancel`],
        ['GET', `/v1/builds/${buildId}/logs`],
        ['GET', `/v1/builds/${succeededId}/artifact`],
      ] as const;
    const call = (method: string, p: string, authorization?: string) =>
      request(api.base, p, {
        method,
        ...(method === 'POST' && p === '/v1/builds' ? { body: GOOD } : {}),
        headers: {
          ...(authorization === undefined ? {} : { authorization }),
          ...(method === 'POST' && p === '/v1/builds' ? { 'content-type': TAR } : {}),
        },
      });

    before(async () => {
      const res = await postRaw('?output=type=tar,dest=mine.tar', GOOD);
      assert.equal(res.status, 202, res.text);
      const body = res.json as { id: string; context: { digest: string } };
      buildId = body.id;
      digest = body.context.digest;
      // A succeeded build with an artifact, as a worker would have left it.
      const alpha = await api.deps.db.project.findUniqueOrThrow({ where: { name: 'alpha' } });
      await api.deps.storage.put('artifacts/hostile/ok.tar', Readable.from([Buffer.from('artifact bytes')]));
      const b = await api.deps.db.build.create({
        data: {
          projectId: alpha.id,
          status: 'succeeded',
          spec: {
            output: { type: 'tar', dest: 'ok.tar', attrs: {} },
            file: 'Dockerfile',
            buildArgs: {},
            labels: {},
            noCache: false,
            network: 'default',
          },
          contextDigest: digest,
          contextSize: BigInt(GOOD.length),
          contextKey: `contexts/sha256/${digest.slice(7)}.tar`,
          artifactKey: 'artifacts/hostile/ok.tar',
          artifactSize: BigInt(14),
          artifactDigest: 'sha256:0',
          startedAt: new Date(),
          finishedAt: new Date(),
        },
      });
      succeededId = b.id;
      revoked = await bootstrapProject(api.db.url, 'alpha', 'to-revoke');
      assert.equal((await call('GET', '/v1/builds', `Bearer ${revoked}`)).status, 200);
      await revokeToken(api, revoked);
    });

    const MALFORMED = [
      'Bearer',
      'Bearer ',
      'Basic dXNlcjpwYXNzd29yZA==',
      'Bearer short',
      'Token kiln_abcdefghijklmnop',
      'Bearer kiln_abc def',
      `Bearer ${'x'.repeat(300)}`,
      'Bearer\u00a0kiln_abcdefghijklmnop',
    ];
    const KINDS: Array<[string, () => string[] | [undefined], RegExp]> = [
      ['no Authorization header', () => [undefined], /send "Authorization: Bearer <token>"/],
      // (A NBSP counts as \s in the header regex, so that one is read as an unknown token: also a 401.)
      [
        'a malformed Authorization header',
        () => MALFORMED,
        /send "Authorization: Bearer <token>"|the token is unknown or revoked/,
      ],
      ['a revoked token', () => [`Bearer ${revoked}`], /the token is unknown or revoked/],
      [
        'an unknown token',
        () => ['Bearer kiln_this-token-was-never-issued'],
        /the token is unknown or revoked/,
      ],
    ];
    for (const [kind, headers, message] of KINDS) {
      for (const i of [0, 1, 2, 3, 4, 5]) {
        test(`401 for every route with ${kind}: route ${i + 1}/6`, async () => {
          const [method, p] = routes()[i] as readonly [string, string];
          for (const h of headers()) {
            const before = await holdings(api);
            const res = await call(method, p, h);
            const desc = `${method} ${p} with ${JSON.stringify(h)}: ${res.status} ${res.text}`;
            assert.equal(res.status, 401, desc);
            assert.equal(errorOf(res)?.code, 'unauthorized', desc);
            assert.match(errorOf(res)?.message ?? '', message, desc);
            assert.ok(!res.text.includes(digest) && !res.text.includes('artifacts/'), `data leaked: ${desc}`);
            assert.equal(res.headers.location, undefined);
            assert.deepEqual(await holdings(api), before, desc);
            assert.deepEqual((await settledTmpFiles(api)).leftovers, [], desc);
          }
        });
      }
    }

    test("another project's token: 404 for each of our builds' routes, never the data", async () => {
      for (const [method, p] of routes().slice(2)) {
        const res = await call(method, p, `Bearer ${api.otherToken}`);
        const desc = `${method} ${p}: ${res.status} ${res.text}`;
        assert.equal(res.status, 404, desc);
        assert.equal(errorOf(res)?.code, 'not_found', desc);
        assert.match(errorOf(res)?.message ?? '', /^no build [0-9A-Z]+$/, desc);
        assert.ok(
          !res.text.includes(digest) && !res.text.includes('artifacts/') && !res.text.includes('sig='),
          desc,
        );
        assert.equal(res.headers.location, undefined, desc);
      }
      // The cancel did not cancel it.
      const mine = await request(api.base, `/v1/builds/${buildId}`, { headers: auth() });
      assert.equal((mine.json as { status: string }).status, 'queued');
    });

    test("another project's list does not show our builds; its Idempotency-Key space is its own", async () => {
      const list = await call('GET', '/v1/builds?limit=100', `Bearer ${api.otherToken}`);
      assert.equal(list.status, 200);
      assert.ok(
        !list.text.includes(buildId) && !list.text.includes(succeededId) && !list.text.includes(digest),
      );
      const mine = await postRaw('', GOOD, TAR, { 'idempotency-key': 'shared-key' });
      const theirs = await request(api.base, '/v1/builds', {
        method: 'POST',
        body: GOOD,
        headers: {
          authorization: `Bearer ${api.otherToken}`,
          'content-type': TAR,
          'idempotency-key': 'shared-key',
        },
      });
      assert.equal(mine.status, 202);
      assert.equal(theirs.status, 202, theirs.text);
      assert.notEqual((theirs.json as { id: string }).id, (mine.json as { id: string }).id);
    });

    test('ids that are not ids: 400 invalid_request for our own token, never a database error', async () => {
      for (const id of ['..%2F..%2Fetc%2Fpasswd', `${'A'.repeat(65)}`, "x'%20OR%201=1--", '%00']) {
        const res = await request(api.base, `/v1/builds/${id}`, { headers: auth() });
        assert.equal(res.status, 400, `${id}: ${res.text}`);
        assert.equal(errorOf(res)?.code, 'invalid_request');
      }
    });

    test('the artifact route redirects our own token to a working signed URL', async () => {
      const res = await request(api.base, `/v1/builds/${succeededId}/artifact`, { headers: auth() });
      assert.equal(res.status, 302);
      const location = String(res.headers.location);
      assert.match(
        location,
        /\/v1\/files\/artifacts\/hostile\/ok\.tar\?expires=\d+&filename=ok\.tar&sig=[0-9a-f]{64}$/,
      );
      const download = await request(api.base, location);
      assert.equal(download.status, 200);
      assert.equal(download.text, 'artifact bytes');
    });
  });

  describe('signed URLs (local storage)', () => {
    const KEY = 'artifacts/hostile/signed.tar';
    let url = '';
    before(async () => {
      await api.deps.storage.put(KEY, Readable.from([Buffer.from('signed bytes')]));
      await api.deps.storage.put('artifacts/hostile/other.tar', Readable.from([Buffer.from('other bytes')]));
      url = await api.deps.storage.signedUrl(KEY, { expiresInSeconds: 300, filename: 'app.tar' });
    });
    const forbidden = async (u: string, message: RegExp) => {
      const res = await request(api.base, u);
      assert.equal(res.status, 403, `${u}: ${res.text}`);
      assert.equal(errorOf(res)?.code, 'forbidden', res.text);
      assert.match(errorOf(res)?.message ?? '', message);
      assert.ok(!res.text.includes('bytes'));
    };
    const edit = (f: (u: URL) => void) => {
      const u = new URL(url);
      f(u);
      return u.toString();
    };

    test('the untampered URL downloads (control)', async () => {
      const res = await request(api.base, url);
      assert.equal(res.status, 200);
      assert.equal(res.text, 'signed bytes');
      assert.equal(res.headers['content-disposition'], 'attachment; filename="app.tar"');
    });
    test('tampered path (another object): 403 forbidden', () =>
      forbidden(
        edit((u) => {
          u.pathname = '/v1/files/artifacts/hostile/other.tar';
        }),
        /signature does not match/,
      ));
    test('tampered path (traversal): 403 forbidden', () =>
      forbidden(
        edit((u) => {
          u.pathname = '/v1/files/artifacts/hostile/..%2F..%2F..%2Fetc%2Fpasswd';
        }),
        /download link is not valid/,
      ));
    test('tampered path (malformed percent-encoding): 4xx, not a 500', async () => {
      const res = await request(
        api.base,
        edit((u) => {
          u.pathname = '/v1/files/artifacts/%25E0%25A4%25A';
        }),
      );
      assert.ok(res.status >= 400 && res.status < 500, `${res.status} ${res.text}`);
    });
    test('tampered expires: 403 forbidden', () =>
      forbidden(
        edit((u) => u.searchParams.set('expires', String(Number(u.searchParams.get('expires')) + 3600))),
        /signature does not match/,
      ));
    test('expires that is not a number: 403 forbidden', () =>
      forbidden(
        edit((u) => u.searchParams.set('expires', '1e99')),
        /bad expiry/,
      ));
    test('tampered filename: 403 forbidden', () =>
      forbidden(
        edit((u) => u.searchParams.set('filename', 'evil.sh')),
        /signature does not match/,
      ));
    test('filename removed: 403 forbidden', () =>
      forbidden(
        edit((u) => u.searchParams.delete('filename')),
        /signature does not match/,
      ));
    test('tampered sig (one hex digit): 403 forbidden', () =>
      forbidden(
        edit((u) => {
          const sig = String(u.searchParams.get('sig'));
          u.searchParams.set('sig', (sig[0] === '0' ? '1' : '0') + sig.slice(1));
        }),
        /signature does not match/,
      ));
    test('sig missing or not hex: 403 forbidden', async () => {
      await forbidden(
        edit((u) => u.searchParams.delete('sig')),
        /bad signature/,
      );
      await forbidden(
        edit((u) => u.searchParams.set('sig', 'z'.repeat(64))),
        /bad signature/,
      );
      await forbidden(
        edit((u) => u.searchParams.set('sig', `${u.searchParams.get('sig')}00`)),
        /bad signature/,
      );
    });
    test('expired (1-second TTL, after it passed): 403 forbidden', async () => {
      const short = await api.deps.storage.signedUrl(KEY, { expiresInSeconds: 1, filename: 'app.tar' });
      const expires = Number(new URL(short).searchParams.get('expires'));
      await delay(Math.max(0, expires * 1000 - Date.now()) + 1100);
      await forbidden(short, /link expired/);
    });
    test('a URL for a deleted object: 404, not a 500', async () => {
      const key = 'artifacts/hostile/deleted.tar';
      await api.deps.storage.put(key, Readable.from([Buffer.from('soon gone')]));
      const u = await api.deps.storage.signedUrl(key, { expiresInSeconds: 60 });
      await api.deps.storage.delete(key);
      const res = await request(api.base, u);
      assert.ok(res.status === 404 || res.status === 410, `${res.status} ${res.text}`);
      assert.equal(errorOf(res)?.code, res.status === 404 ? 'not_found' : 'gone');
    });
    test('a malformed Range header: 400 invalid_request', async () => {
      const res = await request(api.base, url, { headers: { range: 'bytes=5-1,9-' } });
      assert.equal(res.status, 400);
      assert.equal(errorOf(res)?.code, 'invalid_request');
    });
  });

  describe('after the corpus', () => {
    test('no temp file with content is left anywhere in <KILN_DATA_DIR>/tmp', async () => {
      assert.deepEqual((await settledTmpFiles(api, 3000)).leftovers, []);
    });
    test('no empty temp file is left either: fast-failing uploads, 100 × 3 at a time', async (t) => {
      const bad = tar([file('README', 'no Dockerfile here')]);
      for (let i = 0; i < 100; i++) {
        const answers = await Promise.all([0, 1, 2].map(() => postRaw('', bad)));
        for (const a of answers) assert.equal(a.status, 400, a.text);
      }
      const { empty } = await settledTmpFiles(api);
      t.diagnostic(
        `empty temp files: ${empty.length} after the loop; during the corpus: ${emptyLeaks.join(', ') || 'none'}`,
      );
      assert.deepEqual(emptyLeaks, [], 'left during the corpus');
      assert.deepEqual(empty, [], 'left by 300 uploads without a Dockerfile');
    });
    test('the server still answers /healthz and a valid POST', async () => {
      const health = await request(api.base, '/healthz');
      assert.equal(health.status, 200);
      assert.deepEqual(health.json, { status: 'ok' });
      const before = await holdings(api);
      const res = await postRaw(
        '?output=type=tar,dest=final.tar',
        tar([DOCKERFILE, file('final', randomBytes(8).toString('hex'))]),
      );
      assert.equal(res.status, 202, res.text);
      const after = await holdings(api);
      assert.equal(after.wait, before.wait + 1);
      assert.equal(after.builds, before.builds + 1);
      assert.deepEqual((await settledTmpFiles(api)).leftovers, []);
    });
  });
});

/** An HTTP/1.1 answer read off a raw socket. */
function parseRaw(text: string): RawResponse {
  const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
  const split = text.indexOf('\r\n\r\n');
  let body = split >= 0 ? text.slice(split + 4) : '';
  if (/\r\ntransfer-encoding: chunked/i.test(text.slice(0, split))) {
    let out = '';
    for (let rest = body; ; ) {
      const eol = rest.indexOf('\r\n');
      const n = Number.parseInt(rest.slice(0, eol), 16);
      if (!n) break;
      out += rest.slice(eol + 2, eol + 2 + n);
      rest = rest.slice(eol + 4 + n);
    }
    body = out;
  }
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { status: m ? Number(m[1]) : 0, headers: {}, text: body, json, ms: 0, bodyBytesSent: 0 };
}
