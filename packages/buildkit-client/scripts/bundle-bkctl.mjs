// bkctl as one file: loading grpc-js, proto-loader and protobufjs as ~200 separate modules cost
// every bkctl command start-up time (`bkctl debug workers` on buildkitd: 0.35-0.44 s, bundled
// 0.25-0.36 s).
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
