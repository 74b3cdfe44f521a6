#!/usr/bin/env bash
# A fleet under load: Kiln on 3 standalone buildkitd daemons against the same run on 1, and
# writes bench/results/fleet.{json,md}.
#
#   bash bench/fleet.sh
#   BENCH_BUILDS=60 bash bench/fleet.sh            # builds per run (default 200)
#   KILN_BENCH_SKIP_BUILD=1 bash bench/fleet.sh    # skip `npm run build`
#
# Starts, in a private temp directory, PostgreSQL, Redis and 3 buildkitd v0.24.0 (scripts/lib),
# each of concurrency 2. Then, once with KILN_BUILDERS naming all 3 daemons and once naming only
# the first, it starts the API and 2 workers (scripts/run-app.sh, local storage, loopback only),
# and bench/lib/fleet-measure.mjs creates projects through the operator API and submits
# BENCH_BUILDS builds spread over them, each a RUN that sleeps BENCH_SLEEP_S with its own build
# arg (so no cache answers it). It checks in PostgreSQL and in the stored artifacts that every
# build succeeded exactly once, and measures throughput, queue wait and run time, builds per
# builder and peak RSS. bench/lib/fleet-report.mjs renders the summary; target: throughput with
# 3 builders >= 2.2x that with 1. The script fails when a build is lost, duplicated or failed.
set -euo pipefail

START_EPOCH=$EPOCHREALTIME
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench/results
# shellcheck source=../scripts/lib/ensure-deps.sh
source "$ROOT/scripts/lib/ensure-deps.sh"
# shellcheck source=../scripts/lib/buildkitd.sh
source "$ROOT/scripts/lib/buildkitd.sh"
# shellcheck source=../scripts/lib/postgres.sh
source "$ROOT/scripts/lib/postgres.sh"
# shellcheck source=../scripts/lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"
# shellcheck source=lib/common.sh
source "$ROOT/bench/lib/common.sh"

log() { printf 'bench: %s\n' "$*" >&2; }

DAEMONS=3
BUILDER_CONCURRENCY=2
WORKERS=2
# Enough for every slot of the whole fleet, and one more per worker so that a slot freed while
# a worker stores its artifact is taken at once.
WORKER_CONCURRENCY=${BENCH_WORKER_CONCURRENCY:-$((DAEMONS * BUILDER_CONCURRENCY / WORKERS + 1))}

DIR=
PROFILE_DIR=
PIDS=() STARTS=()

stop_kiln() {
	local i
	for i in "${!PIDS[@]}"; do
		_stop_proc "${PIDS[$i]}" "${STARTS[$i]}" 40
	done
	PIDS=() STARTS=()
}

cleanup() {
	local rc=$? i
	if [[ -n $DIR ]]; then
		((rc == 0)) || bench_tail_logs "$DIR/logs"
		stop_kiln || rc=1
		kiln_redis_stop "$DIR/redis" || rc=1
		kiln_pg_stop "$DIR/pg" || rc=1
		for ((i = 1; i <= DAEMONS; i++)); do kiln_buildkitd_stop "$DIR/bk$i" || rc=1; done
		# --one-file-system: never descend into a mount a daemon may have left.
		rm -rf --one-file-system "$DIR" || rc=1
		DIR=
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts `scripts/run-app.sh APP` logging to DIR/logs/NAME.log and records its pid.
start_app() {
	local app=$1 name=$2 pid
	(cd "$ROOT" && exec scripts/run-app.sh "$app") >>"$DIR/logs/$name.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	STARTS+=("$(_start_time "$pid")")
}

# Starts the API and the workers on the first N daemons and waits until all are ready.
start_kiln() {
	local n=$1 i builders=
	for ((i = 1; i <= n; i++)); do builders+=${builders:+,}${ADDRS[$((i - 1))]}=$BUILDER_CONCURRENCY; done
	export KILN_BUILDERS=$builders
	log "starting the API and $WORKERS workers (concurrency $WORKER_CONCURRENCY) on $KILN_BUILDERS"
	: >"$DIR/logs/api-$n.log"
	start_app api "api-$n"
	for ((i = 1; i <= WORKERS; i++)); do
		: >"$DIR/logs/worker$i-$n.log"
		start_app worker "worker$i-$n"
	done
	for ((i = 0; ; i++)); do
		local ready=1 w
		curl -fsS -o /dev/null "$KILN_PUBLIC_URL/readyz" 2>/dev/null || ready=0
		for ((w = 1; w <= WORKERS; w++)); do
			grep -q '"worker started"' "$DIR/logs/worker$w-$n.log" || ready=0
		done
		((ready)) && break
		for w in "${!PIDS[@]}"; do
			_start_time "${PIDS[$w]}" >/dev/null || {
				log "a Kiln process (pid ${PIDS[$w]}) exited during start-up"
				exit 1
			}
		done
		((i < 300)) || {
			log 'API or workers not ready after 60 s'
			exit 1
		}
		sleep 0.2
	done
}

wait_for_other_benchmark
kiln_ensure_deps
if [[ -z ${KILN_BENCH_SKIP_BUILD:-} ]]; then
	log 'building (npm run build)'
	(cd "$ROOT" && npm run build --silent -- --output-logs=errors-only >&2)
fi
for f in apps/api/dist/main.js apps/worker/dist/main.js; do
	[[ -f $ROOT/$f ]] || {
		log "$f is missing: run npm run build"
		exit 1
	}
done

# Short path: unix socket paths below it must stay under ~107 bytes (buildkitd.sh checks).
DIR=$(mktemp -d /tmp/kiln-fleet-XXXX)
mkdir -p "$DIR/logs" "$DIR/tmp" "$DIR/data"
log "state in $DIR"

log "starting PostgreSQL, Redis and $DAEMONS buildkitd"
kiln_pg_start "$DIR/pg" "$(free_port)"
export DATABASE_URL=$REPLY
kiln_redis_start "$DIR/redis" "$(free_port)"
export REDIS_URL=$REPLY
ADDRS=()
for ((i = 1; i <= DAEMONS; i++)); do
	mkdir -p "$DIR/bk$i"
	kiln_buildkitd_start "$DIR/bk$i"
	ADDRS+=("$REPLY")
done

PORT=$(free_port)
export KILN_HOST=127.0.0.1 KILN_PORT=$PORT KILN_PUBLIC_URL=http://127.0.0.1:$PORT
export KILN_DATA_DIR=$DIR/data
KILN_SIGNING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
KILN_OPERATOR_TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export KILN_SIGNING_KEY KILN_OPERATOR_TOKEN
export KILN_WORKER_CONCURRENCY=$WORKER_CONCURRENCY
# Hundreds of POSTs in seconds: no rate limit, no queued-builds quota.
export KILN_RATE_LIMIT_PER_MINUTE=0 KILN_QUOTA_QUEUED_BUILDS=0
# The workers' per-build temp directories stay in DIR too.
export TMPDIR=$DIR/tmp

bench_git_state apps packages prisma
log "kiln at $GIT_HEAD ($GIT_DIRTY changed paths under apps/ packages/ prisma/)"
mkdir -p "$RESULTS"
rm -f "$RESULTS/fleet.json"

# The fleet first, then one builder: the same builds, new projects and build args.
for n in "$DAEMONS" 1; do
	start_kiln "$n"
	BENCH_BUILDERS=$n \
		BENCH_BUILDER_CONCURRENCY=$BUILDER_CONCURRENCY \
		BENCH_WORKER_CONCURRENCY=$WORKER_CONCURRENCY \
		BENCH_API_PID=${PIDS[0]} \
		BENCH_WORKER_PIDS=$(
			IFS=,
			echo "${PIDS[*]:1}"
		) \
		BENCH_BUILDKITD_PIDS=$(for ((i = 1; i <= n; i++)); do printf '%s,' "$(<"$DIR/bk$i/spawned/buildkitd")"; done) \
		BENCH_OUT=$RESULTS/fleet.json \
		BENCH_GIT_HEAD=$GIT_HEAD \
		BENCH_GIT_DIRTY=$GIT_DIRTY \
		node "$ROOT/bench/lib/fleet-measure.mjs"
	stop_kiln
done

log 'stopping Redis, PostgreSQL and the daemons'
kiln_redis_stop "$DIR/redis"
kiln_pg_stop "$DIR/pg"
for ((i = 1; i <= DAEMONS; i++)); do kiln_buildkitd_stop "$DIR/bk$i"; done
rm -rf --one-file-system "$DIR"
DIR=

bench_report fleet-report.mjs fleet
