#!/usr/bin/env bash
# Benchmarks @kiln/buildkit-client (bin/bkctl.js) against the Docker CLI on one private
# dockerd and against buildctl on one standalone buildkitd (scripts/lib/buildkitd.sh), and
# writes bench/results/buildkit-client.{json,md}.
#
#   npm run bench
#   BENCH_SAMPLES=7 npm run bench          # samples per side (default 5, after one warm-up)
#   BENCH_PROFILE=always npm run bench     # always CPU-profile one bkctl export
#   KILN_BENCH_SKIP_BUILD=1 npm run bench  # skip `npm run build`
#   BENCH_ONLY=buildkitd npm run bench     # only one daemon: dockerd or buildkitd
#   BENCH_NODE=/opt/node24/bin/node npm run bench  # bkctl on another Node release; results
#                                          # in buildkit-client-node<major>.{json,md}
#
# On dockerd (docker build = /usr/bin/docker with DOCKER_BUILDKIT=1, the reference):
#   1. export a 512 MiB tar to a file from a warm cache      target: bkctl/docker <= 1.0
#   2. upload a cold 50 MB / 2,000-file context               no target
#   3. peak RSS exporting 2 GiB to a 256 MiB/s stdout reader  target: bkctl <= 150 MiB
# On buildkitd v0.24 (buildctl with the same flags, the reference):
#   1. export a 512 MiB tar to a file from a warm cache      target: bkctl/buildctl <= 1.0
#   2. upload a cold 50 MB / 2,000-file context               target: bkctl/buildctl <= 1.2
#   3. peak RSS of the client over the export runs            target: bkctl <= 150 MiB
# Measuring is done by bench/lib/measure.mjs; bench/lib/report.mjs writes the summary.
set -euo pipefail

START_EPOCH=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench/results
# shellcheck source=../scripts/lib/ensure-deps.sh
source "$ROOT/scripts/lib/ensure-deps.sh"
# shellcheck source=../scripts/lib/dockerd.sh
source "$ROOT/scripts/lib/dockerd.sh"
# shellcheck source=../scripts/lib/buildkitd.sh
source "$ROOT/scripts/lib/buildkitd.sh"
# shellcheck source=lib/common.sh
source "$ROOT/bench/lib/common.sh"

log() { printf 'bench: %s\n' "$*" >&2; }

DAEMON_DIR=
PROFILE_DIR=

cleanup() {
	local rc=$?
	[[ -z $PROFILE_DIR ]] || rmdir "$PROFILE_DIR" 2>/dev/null || true
	if [[ -n $DAEMON_DIR ]]; then
		kiln_buildkitd_stop "$DAEMON_DIR/bk" || rc=1
		kiln_dockerd_stop "$DAEMON_DIR" || rc=1
		# --one-file-system: never descend into a mount the daemon may have left.
		rm -rf --one-file-system "$DAEMON_DIR" || rc=1
		DAEMON_DIR=
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BENCH_ONLY=${BENCH_ONLY:-}
[[ $BENCH_ONLY =~ ^(|dockerd|buildkitd)$ ]] || {
	log "BENCH_ONLY=$BENCH_ONLY: expected dockerd or buildkitd (or unset for both)"
	exit 2
}
RESULT_NAME=buildkit-client
if [[ -n ${BENCH_NODE:-} ]]; then
	major=$("$BENCH_NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || {
		log "BENCH_NODE=$BENCH_NODE: not a node binary that runs here"
		exit 2
	}
	RESULT_NAME=buildkit-client-node$major
fi
kiln_ensure_deps
if [[ -z ${KILN_BENCH_SKIP_BUILD:-} ]]; then
	# Only the package under test (and what it depends on): unrelated packages in the
	# middle of an edit must not stop the benchmark.
	log 'building @kiln/buildkit-client'
	(cd "$ROOT" && npm run build --silent -- --filter=@kiln/buildkit-client --output-logs=errors-only >&2)
fi
[[ -f $ROOT/packages/buildkit-client/dist/cli.js ]] || {
	log 'packages/buildkit-client/dist is missing: run npm run build'
	exit 1
}
[[ -x /usr/bin/time ]] || {
	log '/usr/bin/time is missing (apt-get install time)'
	exit 1
}

# Short path: unix socket paths below it must stay under ~107 bytes.
DAEMON_DIR=$(mktemp -d /tmp/kiln-bench-XXXX)
DAEMON_ENV=(BENCH_ONLY="$BENCH_ONLY")
if [[ $BENCH_ONLY != buildkitd ]]; then
	log "starting dockerd in $DAEMON_DIR"
	kiln_dockerd_start "$DAEMON_DIR"
	DAEMON_ENV+=(BENCH_SOCK="$DAEMON_DIR/docker.sock" BENCH_DOCKERD_PID="$(<"$DAEMON_DIR/spawned/dockerd")")
fi
if [[ $BENCH_ONLY != dockerd ]]; then
	log "starting buildkitd in $DAEMON_DIR/bk"
	mkdir -p "$DAEMON_DIR/bk"
	kiln_buildkitd_start "$DAEMON_DIR/bk"
	DAEMON_ENV+=(BENCH_BK_ADDR="$REPLY" BENCH_BUILDKITD_PID="$(<"$DAEMON_DIR/bk/spawned/buildkitd")"
		BENCH_BUILDCTL="$(kiln_buildkit_bin_dir)/buildctl")
fi

# Run a frozen copy of the built client: other work in this checkout (a rebuild, an edit)
# must not swap the program under test halfway through. Same files as
# packages/buildkit-client/{bin,dist,proto}; node_modules resolves through a symlink.
CLIENT=$DAEMON_DIR/buildkit-client
mkdir -p "$CLIENT"
cp -a "$ROOT/packages/buildkit-client/"{bin,dist,proto,package.json} "$CLIENT/"
ln -s "$ROOT/node_modules" "$CLIENT/node_modules"
bench_git_state packages/buildkit-client
log "client: packages/buildkit-client at $GIT_HEAD ($GIT_DIRTY changed paths), snapshot in $CLIENT"

# CPU profiles outlive the daemon directory so they can be inspected afterwards.
PROFILE_DIR=$(mktemp -d /tmp/kiln-bench-prof-XXXX)
mkdir -p "$RESULTS"

env "${DAEMON_ENV[@]}" \
	BENCH_WORK=$DAEMON_DIR/work \
	BENCH_OUT=$RESULTS/$RESULT_NAME.json \
	BENCH_NODE=${BENCH_NODE:-} \
	BENCH_PROFILE_DIR=$PROFILE_DIR \
	BENCH_CLIENT_DIR=$CLIENT \
	BENCH_GIT_HEAD=$GIT_HEAD \
	BENCH_GIT_DIRTY=$GIT_DIRTY \
	node "$ROOT/bench/lib/measure.mjs"

log 'stopping the daemons'
kiln_buildkitd_stop "$DAEMON_DIR/bk"
kiln_dockerd_stop "$DAEMON_DIR"
rm -rf --one-file-system "$DAEMON_DIR"
DAEMON_DIR=

bench_report report.mjs "$RESULT_NAME"
