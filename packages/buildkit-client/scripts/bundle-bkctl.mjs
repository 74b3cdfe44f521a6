// bkctl as one file: loading the package as ~60 separate modules costs every bkctl command
// start-up time (it was 0.1 s when grpc-js's ~100 modules were among them). CommonJS, as
// bin/bkctl.js is: Node 20's ESM loader, and the ESM facade it builds for every node: module
// imported (each export read, node:tls's root certificates parsed with them), cost ~10 ms of
// each command (`bkctl debug workers` 0.121 s against 0.111 s, medians of 25).
import { build } from 'esbuild';

await build({
  entryPoints: [new URL('../dist/cli.js', import.meta.url).pathname],
  outfile: new URL('../dist/bkctl.bundle.cjs', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20.11',
  // package-root.ts finds package.json from import.meta.url, which CommonJS lacks. The banner
  // goes before esbuild's own "use strict", which then no longer counts: it says it again.
  define: { 'import.meta.url': '__bkctlBundleUrl' },
  banner: {
    js: '"use strict";\nconst __bkctlBundleUrl = require("node:url").pathToFileURL(__filename).href;',
  },
  logLevel: 'warning',
});
