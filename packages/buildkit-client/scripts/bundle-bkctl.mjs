// bkctl as one file: loading grpc-js, proto-loader and protobufjs as ~200 separate modules cost
// every bkctl command ~0.1 s of start-up (`bkctl debug workers`: 0.33 s, 0.22 s bundled).
import { build } from 'esbuild';

await build({
  entryPoints: [new URL('../dist/cli.js', import.meta.url).pathname],
  outfile: new URL('../dist/bkctl.bundle.js', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20.11',
  logLevel: 'warning',
  // grpc-js is CommonJS and requires Node's built-ins, which an ES module bundle has no
  // `require` for.
  banner: {
    js: "import { createRequire as bkctlCreateRequire } from 'node:module'; const require = bkctlCreateRequire(import.meta.url);",
  },
});
