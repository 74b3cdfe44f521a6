#!/bin/sh
# Starts one Kiln process in the foreground: `scripts/run-app.sh api|worker [node flags]`, e.g.
# `scripts/run-app.sh worker --cpu-prof` (node refuses --cpu-prof in NODE_OPTIONS).
#
# Every launcher goes through here (npm start, the image and docker-compose, bench/service.sh, the
# tests' child processes), so each process runs with the memory settings its budget was measured
# with (≤ 150 MiB peak RSS; bench/results/service.md):
# - V8 semi-spaces of 2 MiB: the default 16 MiB ones alone kept 28 MiB of young generation resident;
# - at most 2 glibc malloc arenas: per-thread arenas kept the buffers of a finished export resident
#   (the worker's peak during a 2 GiB export went from 161 to 132 MiB).
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
exec node --max-semi-space-size=2 "$@" "$(dirname "$0")/../apps/$app/dist/main.js"
