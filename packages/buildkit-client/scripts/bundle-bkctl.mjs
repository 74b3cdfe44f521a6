// bkctl as one file: loading grpc-js as ~100 separate modules cost
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
  // grpc-js requires proto-loader (and through it protobufjs, ~40% of the bundle) only for
  // server-side channelz and ORCA, which a client never starts; left out, the bundle is that
  // much less to read and compile at every start. Where it is installed, the require still works.
  external: ['@grpc/proto-loader'],
  // grpc-js is CommonJS and requires Node's built-ins, which an ES module bundle has no
  // `require` for.
  banner: {
    js: "import { createRequire as bkctlCreateRequire } from 'node:module'; const require = bkctlCreateRequire(import.meta.url);",
  },
});
