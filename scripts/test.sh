#!/usr/bin/env bash
# Builds the workspace and runs every *.test.ts (the *.unit.test.ts ones too) against two
# private Docker daemons (BuildKit 0.8, embedded), one standalone buildkitd (v0.24.0 from
# ../shared/buildkit unless scripts/lib/buildkitd.sh finds another), PostgreSQL and Redis. `npm run test:unit` runs only the unit tests.
#   npm test                         # all tests
#   npm test -- path/to/a.test.ts    # only these files
#   KILN_TEST_SKIP_BUILD=1 npm test  # skip `npm run build`
# Tests find the daemons through KILN_TEST_DOCKER_SOCK, KILN_TEST_DOCKER_SOCK_2 and
# KILN_TEST_BUILDKITD_ADDR (its buildctl: KILN_TEST_BUILDCTL).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# npm runs scripts from the root; INIT_CWD is where the user typed `npm test`.
CALLER_CWD=${INIT_CWD:-$PWD}
# shellcheck source=lib/ensure-deps.sh
source "$ROOT/scripts/lib/ensure-deps.sh"
# shellcheck source=lib/dockerd.sh
source "$ROOT/scripts/lib/dockerd.sh"
# shellcheck source=lib/buildkitd.sh
source "$ROOT/scripts/lib/buildkitd.sh"
# shellcheck source=lib/postgres.sh
source "$ROOT/scripts/lib/postgres.sh"
# shellcheck source=lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"
# shellcheck source=lib/test-files.sh
source "$ROOT/scripts/lib/test-files.sh"
# shellcheck source=lib/test-run.sh
source "$ROOT/scripts/lib/test-run.sh"

log() { printf 'test.sh: %s\n' "$*" >&2; }

TEMP_DIRS=()
BUILDKITD_DIR=
PG_DIR=
REDIS_DIR=

cleanup() {
	local rc=$? dir
	# Interrupted mid-run: stop the runner before the daemons its tests talk to.
	if [[ -n $KILN_TEST_RUNNER_PID ]] && kill -TERM "$KILN_TEST_RUNNER_PID" 2>/dev/null; then
		wait "$KILN_TEST_RUNNER_PID" || true
	fi
	[[ -n $BUILDKITD_DIR ]] && { kiln_buildkitd_stop "$BUILDKITD_DIR" || rc=1; }
	[[ -n $PG_DIR ]] && { kiln_pg_stop "$PG_DIR" || rc=1; }
	[[ -n $REDIS_DIR ]] && { kiln_redis_stop "$REDIS_DIR" || rc=1; }
	for dir in "${TEMP_DIRS[@]}"; do
		kiln_dockerd_stop "$dir" || rc=1
		# --one-file-system: never descend into a mount the daemon may have left.
		rm -rf --one-file-system "$dir" || rc=1
	done
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

elapsed_ms() {
	local now=$EPOCHREALTIME
	echo $(((${now/./} - ${1/./}) / 1000))
}

# Short paths: unix socket paths under these must stay below ~107 bytes.
start_daemon() {
	local dir
	dir=$(mktemp -d /tmp/kiln-XXXX)
	TEMP_DIRS+=("$dir")
	kiln_dockerd_start "$dir"
	REPLY=$dir
}

# Prints the test files to run, one per line: the arguments (relative to the caller's
# directory) or, without arguments, every test file in the workspace.
list_test_files() {
	local arg
	if (($# > 0)); then
		for arg in "$@"; do
			[[ $arg == /* ]] || arg=$CALLER_CWD/$arg
			[[ -f $arg ]] || { log "no such test file: $arg"; return 1; }
			echo "$arg"
		done
		return 0
	fi
	kiln_test_files
}

# A port nothing listens on now (the kernel's pick); tests start their services on it.
free_port() {
	node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

main() {
	cd "$ROOT"
	kiln_ensure_deps test
	local listing
	local -a files
	listing=$(list_test_files "$@")
	[[ -n $listing ]] || { log "no test files found"; return 1; }
	mapfile -t files <<<"$listing"

	# Tests run from source through tsx; skipping the build only saves time while iterating.
	if [[ ${KILN_TEST_SKIP_BUILD:-} == 1 ]]; then
		log "KILN_TEST_SKIP_BUILD=1: not building"
	else
		log "building"
		npm run build --silent
	fi

	local started=$EPOCHREALTIME
	start_daemon
	export KILN_TEST_DOCKERD_DIR=$REPLY
	export KILN_TEST_DOCKER_SOCK=$REPLY/docker.sock
	start_daemon
	export KILN_TEST_DOCKERD_DIR_2=$REPLY
	export KILN_TEST_DOCKER_SOCK_2=$REPLY/docker.sock
	log "private dockerds up in $(elapsed_ms "$started") ms: $KILN_TEST_DOCKER_SOCK $KILN_TEST_DOCKER_SOCK_2"

	started=$EPOCHREALTIME
	BUILDKITD_DIR=$(mktemp -d /tmp/kiln-bk-XXXX)
	TEMP_DIRS+=("$BUILDKITD_DIR")
	kiln_buildkitd_start "$BUILDKITD_DIR"
	export KILN_TEST_BUILDKITD_ADDR=$REPLY
	KILN_TEST_BUILDCTL=$(kiln_buildkit_bin_dir)/buildctl
	export KILN_TEST_BUILDCTL
	log "buildkitd $("$KILN_TEST_BUILDCTL" --version | cut -d' ' -f3) up in $(elapsed_ms "$started") ms: $KILN_TEST_BUILDKITD_ADDR"

	started=$EPOCHREALTIME
	PG_DIR=$(mktemp -d /tmp/kiln-pg-XXXX)
	TEMP_DIRS+=("$PG_DIR")
	kiln_pg_start "$PG_DIR" "$(free_port)"
	export KILN_TEST_DATABASE_URL=$REPLY
	REDIS_DIR=$(mktemp -d /tmp/kiln-redis-XXXX)
	TEMP_DIRS+=("$REDIS_DIR")
	local redis_port
	redis_port=$(free_port)
	kiln_redis_start "$REDIS_DIR" "$redis_port"
	export KILN_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
	export KILN_TEST_REDIS_DIR=$REDIS_DIR
	log "postgresql and redis up in $(elapsed_ms "$started") ms: $KILN_TEST_DATABASE_URL $KILN_TEST_REDIS_URL"

	kiln_run_tests "$KILN_TEST_DOCKERD_DIR/test-summary.txt" --test-concurrency=1 -- "${files[@]}"
}

main "$@"
