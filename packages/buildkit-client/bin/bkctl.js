#!/bin/sh
':' //; for a; do case $a in --tls*) exec node "$0" "$@" ;; esac; done; unset NODE_EXTRA_CA_CERTS; exec node "$0" "$@"
// The line above is shell for sh and a string plus a comment for Node. Node 20 reads and parses
// the file NODE_EXTRA_CA_CERTS names at every start, before any JavaScript runs: with Debian's
// CA bundle that is 0.04-0.05 s of a 0.16 s `bkctl debug workers`. bkctl opens a TLS connection
// only when a --tls* flag is given, and makes no other network request and starts no other
// program, so without such a flag the variable cannot change what bkctl does, and sh drops it.
// With one, Node starts as it always would. `node bin/bkctl.js` skips the sh line, unchanged.
// biome.json leaves this file unformatted: a `;` after ':' would have sh run `//` as a command.
//
// bkctl runs in this process. It used to start itself again with 1 MiB semi-spaces, which cut
// the CPU of a 512 MiB export by a third while the session went through grpc-js; with the
// session's own HTTP/2 server the size makes no difference (user 1.05-1.19 s with 1 MiB,
// 1.10-1.23 s with 16 MiB, buildkitd v0.24.0), and the second process cost every command
// ~0.05-0.1 s of start-up. Peak RSS over a 512 MiB export is ~78 MiB.
//
// A command lives a second or two, so V8 optimizes later than its default: 4x the interrupt
// budget, set before the bundle's functions exist. With the default, TurboFan compiled ~100
// functions in ~0.3-0.5 s of background CPU during a 50 MB / 2,000-file context upload, on a
// machine where buildkitd, receiving, needs a core of its own (2 cores here). Medians of 8,
// buildkitd v0.24.0: upload 1.129 -> 1.026 s (CPU 0.78 -> 0.58 s; buildctl 0.857 s), 512 MiB
// export 2.538 -> 2.637 s (its hot loop optimizes later; buildctl 2.899 s). A V8 without the flag
// would print one line and go on (setFlagsFromString), where `node --flag` would not start.
// CommonJS (bin/package.json says so), as the bundle is: see scripts/bundle-bkctl.mjs.
// The exit code is 1 unless main returns one, as it was with top-level await: a process that
// ends with main still pending (a stream whose end never came), or rejected, is no success.
process.exitCode = 1;
require('node:v8').setFlagsFromString('--interrupt-budget=270336');
const { main } = require('../dist/bkctl.bundle.cjs');
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => console.error(err),
);
