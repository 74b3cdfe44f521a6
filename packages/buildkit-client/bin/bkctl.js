#!/usr/bin/env node
// bkctl runs in this process with V8's defaults. It used to start itself again with 1 MiB
// semi-spaces, which cut the CPU of a 512 MiB export by a third while the session went through
// grpc-js; with the session's own HTTP/2 server the size makes no difference (user 1.05-1.19 s
// with 1 MiB, 1.10-1.23 s with 16 MiB, buildkitd v0.24.0), and the second process cost every
// command ~0.05-0.1 s of start-up. Peak RSS over a 512 MiB export is ~78 MiB.
const { main } = await import('../dist/bkctl.bundle.js');
process.exitCode = await main(process.argv.slice(2));
