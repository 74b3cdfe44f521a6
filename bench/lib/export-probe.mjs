#!/usr/bin/env node
// Diagnostic for the export benchmark: the same solve as `bkctl ... --output type=tar,dest=F`
// through the library API, with a choice of Writable, to tell the gRPC receive path apart
// from the file-writing path. Does not change the client; only what it writes into.
//
//   node export-probe.mjs CLIENT_DIR ADDR CONTEXT_DIR VARIANT DEST   (ADDR: docker://SOCK, unix://SOCK)
//   VARIANT: file        createWriteStream(DEST), as bkctl's cli.ts does (16 KiB highWaterMark)
//            file-4m     createWriteStream(DEST, { highWaterMark: 4 MiB })
//            null        a Writable that discards (no file I/O at all)
// Prints one JSON line: import/connect/solve milliseconds, chunks written and their sizes.

import { createWriteStream, rmSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';

const [clientDir, addr, ctx, variant, dest] = process.argv.slice(2);
const t0 = performance.now();
const { connect } = await import(pathToFileURL(path.join(clientDir, 'dist/index.js')).href);
const tImport = performance.now();

let chunks = 0;
let bytes = 0;
const sizes = new Map();
const count = (chunk) => {
  chunks++;
  bytes += chunk.length;
  sizes.set(chunk.length, (sizes.get(chunk.length) ?? 0) + 1);
};

let output;
if (variant === 'null') {
  output = new Writable({
    write(chunk, _encoding, cb) {
      count(chunk);
      cb();
    },
  });
} else if (variant === 'file' || variant === 'file-4m') {
  output = createWriteStream(dest, variant === 'file-4m' ? { highWaterMark: 4 * 1024 * 1024 } : {});
  const write = output.write.bind(output);
  output.write = (chunk, ...rest) => {
    count(chunk);
    return write(chunk, ...rest);
  };
} else {
  process.stderr.write(`unknown variant ${variant}\n`);
  process.exit(2);
}

const client = await connect(addr);
const tConnect = performance.now();
await client.solve({
  frontend: 'dockerfile.v0',
  frontendAttrs: { 'force-network-mode': 'none' },
  localDirs: { context: ctx, dockerfile: ctx },
  exports: [{ type: 'tar', output }],
});
const tSolve = performance.now();
await client.close();
if (variant !== 'null') rmSync(dest, { force: true });

const ms = (a, b) => Math.round(b - a);
process.stdout.write(
  `${JSON.stringify({
    variant,
    import_ms: ms(t0, tImport),
    connect_ms: ms(tImport, tConnect),
    solve_ms: ms(tConnect, tSolve),
    chunks,
    bytes,
    common_chunk_sizes: [...sizes]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([size, n]) => ({ size, n })),
  })}\n`,
);
