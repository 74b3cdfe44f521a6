// bkctl as one file: loading the package as ~60 separate modules costs every bkctl command
// start-up time (it was 0.1 s when grpc-js's ~100 modules were among them).
import { build } from 'esbuild';

await build({
  entryPoints: [new URL('../dist/cli.js', import.meta.url).pathname],
  outfile: new URL('../dist/bkctl.bundle.js', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.11',
  logLevel: 'warning',
});
