#!/usr/bin/env bash
# Benchmarks the Kiln service end to end on one machine, on a standalone buildkitd v0.24
# (reference: buildctl) and on dockerd 20.10 (reference: docker build), and writes
# bench/results/service-buildkitd.{json,md} and bench/results/service.{json,md}.
#
#   bash bench/service.sh
#   BENCH_ONLY=buildkitd bash bench/service.sh      # only one daemon: buildkitd or dockerd
#   BENCH_SAMPLES=7 bash bench/service.sh           # samples per side (default 5, after one warm-up)
#   BENCH_PROFILE=always bash bench/service.sh      # CPU-profile every load (default: what misses its target)
#   KILN_BENCH_SKIP_BUILD=1 bash bench/service.sh   # skip `npm run build`
#
# For each daemon, buildkitd first, it starts in a private temp directory PostgreSQL, Redis, the
# daemon (Kiln's only builder) and Kiln's API and worker as child processes (local storage,
# loopback only), bootstraps a token, runs bench/lib/service-measure.mjs, stops everything, and
# renders the summary with bench/lib/service-report.mjs. Each daemon gets fresh PostgreSQL and
# Redis: builds one part leaves queued must not run in the next. Benchmarks (the reference
# client on the same daemon: buildctl build, docker build):
#   1. end to end, POST → artifact stored vs the reference's --output type=tar: a 512 MiB output
#      (target kiln/reference <= 1.10) and a tiny build (target <= +0.15 s vs buildctl,
#      <= +0.3 s vs docker)
#   2. peak RSS: the worker exporting 2 GiB, the API receiving a 1 GiB context (<= 150 MiB each)
#   3. dockerd only (the daemon plays no part): autocannon: GET /v1/builds/:id (>= 3,000 req/s),
#      POST /v1/builds 10 KiB (>= 300 req/s)
# It never measures while bench/run.sh runs: it waits for it first (polling every 30 s).
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
# shellcheck source=../scripts/lib/postgres.sh
source "$ROOT/scripts/lib/postgres.sh"
# shellcheck source=../scripts/lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"
# shellcheck source=lib/common.sh
source "$ROOT/bench/lib/common.sh"

log() { printf 'bench: %s\n' "$*" >&2; }

DIR=
SEC=
PROFILE_DIR=
API_PID= API_START= WORKER_PID= WORKER_START=

stop_kiln() {
	local f pid start
	_stop_proc "$API_PID" "$API_START" 30
	_stop_proc "$WORKER_PID" "$WORKER_START" 40
	# Processes the measuring script restarted (e.g. with --cpu-prof), should it have died.
	for f in "$SEC"/spawned-kiln/*; do
		[[ -f $f ]] || continue
		read -r pid start <"$f" || continue
		_stop_proc "$pid" "$start" 30
	done
	API_PID= WORKER_PID=
}

# Stops what the current daemon's part (SEC) started; safe to call twice.
stop_section() {
	local rc=0
	[[ -n $SEC ]] || return 0
	stop_kiln || rc=1
	kiln_redis_stop "$SEC/redis" || rc=1
	kiln_pg_stop "$SEC/pg" || rc=1
	kiln_buildkitd_stop "$SEC/bk" || rc=1
	kiln_dockerd_stop "$SEC/d" || rc=1
	SEC=
	return "$rc"
}

cleanup() {
	local rc=$?
	if [[ -n $DIR ]]; then
		if ((rc != 0)) && [[ -n $SEC ]]; then bench_tail_logs "$SEC/logs"; fi
		stop_section || rc=1
		# --one-file-system: never descend into a mount the daemon may have left.
		rm -rf --one-file-system "$DIR" || rc=1
		DIR=
	fi
	[[ -z $PROFILE_DIR ]] || rmdir "$PROFILE_DIR" 2>/dev/null || true
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for_other_benchmark
kiln_ensure_deps
if [[ -z ${KILN_BENCH_SKIP_BUILD:-} ]]; then
	log 'building (npm run build)'
	(cd "$ROOT" && npm run build --silent -- --output-logs=errors-only >&2)
fi
for f in apps/api/dist/main.js apps/api/dist/bootstrap.js apps/worker/dist/main.js; do
	[[ -f $ROOT/$f ]] || {
		log "$f is missing: run npm run build"
		exit 1
	}
done
[[ -x /usr/bin/time ]] || {
	log '/usr/bin/time is missing (apt-get install time)'
	exit 1
}

BENCH_ONLY=${BENCH_ONLY:-}
case $BENCH_ONLY in
'') DAEMONS=(buildkitd dockerd) ;;
buildkitd | dockerd) DAEMONS=("$BENCH_ONLY") ;;
*)
	log "BENCH_ONLY=$BENCH_ONLY: expected buildkitd or dockerd (or unset for both)"
	exit 2
	;;
esac

# Short path: unix socket paths below it must stay under ~107 bytes.
DIR=$(mktemp -d /tmp/kiln-sbench-XXXX)
log "state in $DIR"
# CPU profiles outlive DIR so they can be inspected afterwards.
PROFILE_DIR=$(mktemp -d /tmp/kiln-service-prof-XXXX)
mkdir -p "$RESULTS"
bench_git_state apps packages prisma
log "kiln at $GIT_HEAD ($GIT_DIRTY changed paths under apps/ packages/ prisma/)"

# One daemon's part: PostgreSQL, Redis, the daemon, Kiln's API and worker, the measurements,
# then everything stopped again. Writes RESULTS/NAME.json.
bench_on() {
	local daemon=$1 name=$2 daemon_env
	SEC=$DIR/$daemon
	mkdir -p "$SEC/logs" "$SEC/tmp" "$SEC/data" "$SEC/work" "$SEC/spawned-kiln"
	log "$daemon: starting PostgreSQL, Redis and $daemon"
	kiln_pg_start "$SEC/pg" "$(free_port)"
	export DATABASE_URL=$REPLY
	kiln_redis_start "$SEC/redis" "$(free_port)"
	export REDIS_URL=$REPLY
	if [[ $daemon == dockerd ]]; then
		mkdir -p "$SEC/d"
		kiln_dockerd_start "$SEC/d"
		export KILN_BUILDERS=docker://$SEC/d/docker.sock
		daemon_env=(BENCH_SOCK="$SEC/d/docker.sock" BENCH_DAEMON_PID="$(<"$SEC/d/spawned/dockerd")"
			BENCH_CONTAINERD_PID="$(<"$SEC/d/spawned/containerd")")
	else
		mkdir -p "$SEC/bk"
		kiln_buildkitd_start "$SEC/bk"
		export KILN_BUILDERS=$REPLY
		daemon_env=(BENCH_SOCK="$SEC/bk/buildkitd.sock" BENCH_DAEMON_PID="$(<"$SEC/bk/spawned/buildkitd")"
			BENCH_BUILDCTL="$(kiln_buildkit_bin_dir)/buildctl")
	fi

	PORT=$(free_port)
	export KILN_HOST=127.0.0.1 KILN_PORT=$PORT KILN_PUBLIC_URL=http://127.0.0.1:$PORT
	export KILN_DATA_DIR=$SEC/data
	KILN_SIGNING_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	export KILN_SIGNING_KEY
	# 3 GiB: room for the 1 GiB upload whatever the default is.
	export KILN_MAX_CONTEXT_BYTES=$((3 * 1024 * 1024 * 1024))
	# The load benchmarks send thousands of requests a second for one project: no rate limit, and
	# the POST run (worker stopped) queues tens of thousands of builds: no queued-builds quota.
	export KILN_RATE_LIMIT_PER_MINUTE=0 KILN_QUOTA_QUEUED_BUILDS=0
	# The worker's per-build temp directories (extracted contexts) stay in SEC too.
	export TMPDIR=$SEC/tmp

	TOKEN_LINE=$(cd "$ROOT" && node apps/api/dist/bootstrap.js --project bench --token-name bench)
	KILN_TOKEN=${TOKEN_LINE#KILN_TOKEN=}
	[[ $KILN_TOKEN != "$TOKEN_LINE" && -n $KILN_TOKEN ]] || {
		log "bootstrap printed no token: $TOKEN_LINE"
		exit 1
	}

	log "$daemon: starting the API (127.0.0.1:$PORT) and the worker"
	(cd "$ROOT" && exec scripts/run-app.sh api) >>"$SEC/logs/api.log" 2>&1 &
	API_PID=$!
	API_START=$(_start_time "$API_PID")
	(cd "$ROOT" && exec scripts/run-app.sh worker) >>"$SEC/logs/worker.log" 2>&1 &
	WORKER_PID=$!
	WORKER_START=$(_start_time "$WORKER_PID")
	for ((i = 0; ; i++)); do
		if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" && grep -q '"worker started"' "$SEC/logs/worker.log"; then
			break
		fi
		_start_time "$API_PID" >/dev/null || { log 'the API exited during start-up'; exit 1; }
		_start_time "$WORKER_PID" >/dev/null || { log 'the worker exited during start-up'; exit 1; }
		((i < 300)) || { log 'API or worker not ready after 60 s'; exit 1; }
		sleep 0.2
	done

	env "${daemon_env[@]}" \
		BENCH_DAEMON="$daemon" \
		KILN_URL="http://127.0.0.1:$PORT" \
		KILN_TOKEN="$KILN_TOKEN" \
		BENCH_PG_PID="$(head -n 1 "$SEC/pg/pgdata/postmaster.pid")" \
		BENCH_REDIS_PID="$(<"$SEC/redis/redis.pid")" \
		BENCH_API_PID="$API_PID" \
		BENCH_WORKER_PID="$WORKER_PID" \
		BENCH_WORK="$SEC/work" \
		BENCH_LOG_DIR="$SEC/logs" \
		BENCH_SPAWNED="$SEC/spawned-kiln" \
		BENCH_OUT="$RESULTS/$name.json" \
		BENCH_PROFILE_DIR="$PROFILE_DIR" \
		BENCH_GIT_HEAD="$GIT_HEAD" \
		BENCH_GIT_DIRTY="$GIT_DIRTY" \
		node "$ROOT/bench/lib/service-measure.mjs"

	log "$daemon: stopping the service, Redis, PostgreSQL and $daemon"
	stop_section
}

for daemon in "${DAEMONS[@]}"; do
	name=service
	[[ $daemon == dockerd ]] || name=service-$daemon
	bench_on "$daemon" "$name"
done
rm -rf --one-file-system "$DIR"
DIR=

# bench_report clears PROFILE_DIR: keep it for the second report.
profiles=$PROFILE_DIR
for daemon in "${DAEMONS[@]}"; do
	name=service
	[[ $daemon == dockerd ]] || name=service-$daemon
	PROFILE_DIR=$profiles
	bench_report service-report.mjs "$name"
done
