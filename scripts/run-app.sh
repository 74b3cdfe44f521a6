#!/bin/sh
# Starts one Kiln process in the foreground: `scripts/run-app.sh api|worker [node flags]`, e.g.
# `scripts/run-app.sh worker --cpu-prof` (node refuses --cpu-prof in NODE_OPTIONS).
#
# Every launcher goes through here (npm start, the image and docker-compose, bench/service.sh, the
# tests' child processes), so each process runs with the memory settings its budget was measured
# with (≤ 150 MiB peak RSS; bench/results/service.md):
# - V8 semi-spaces of 2 MiB: the default 16 MiB ones alone kept 28 MiB of young generation resident;
# - at most 2 glibc malloc arenas: per-thread arenas kept the buffers of a finished export resident
#   (the worker's peak during a 2 GiB export went from 161 to 132 MiB);
# - V8's old-generation limit at twice the live heap (--heap-growing-percent=100): every copy of an
#   export chunk is an ArrayBuffer that counts against that limit until a GC frees it, and with
#   the default ~10 MiB of slack over the worker's ~31 MiB heap V8 ran a full mark-compact every
#   ~70 ms of a transfer (about 130 per 512 MiB; bkctl, with a small heap, runs one);
# - glibc's trim and mmap thresholds fixed at 128 KiB (instead of its growing dynamic ones), so
#   freed buffers go back to the system and the larger GC slack does not become resident.
# Together (buildkitd v0.24.0, bench/results/service-buildkitd.md): worker CPU per 512 MiB build
# 7.2 -> 2.6 s, a 2 GiB export 30 -> 13 s; the price was memory: the worker's peak exporting 2 GiB
# went from 147 to 157-160 MiB. Since the client frames Control.Session itself (one copy fewer
# per chunk) it is 140-142 MiB with these settings, and 2.05 s of CPU per 512 MiB build; since
# Prisma's query compiler is no longer held as base64 text in the heap (5 MiB less live heap),
# 133.5-148.7 MiB over five runs on both daemons; what varies is glibc's main arena (see
# docs/architecture.md, "Prisma's query compiler from a file").
# `exec`, so that signals and the process id are node's own.
set -eu
case ${1:-} in
api | worker) ;;
*)
	echo "usage: $0 api|worker [node flags]" >&2
	exit 2
	;;
esac
app=$1
shift
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-131072}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-131072}"
exec node --max-semi-space-size=2 --heap-growing-percent=100 "$@" "$(dirname "$0")/../apps/$app/dist/main.js"
