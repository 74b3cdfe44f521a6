#!/usr/bin/env bash
# `npm start`: Kiln on one machine. Installs what is missing for running it (not what only the
# tests use: scripts/lib/ensure-deps.sh run), starts what is not configured
# (PostgreSQL, Redis, a private dockerd for BuildKit) with state under .kiln/, runs the API
# and the worker, prints a token and a ready-to-paste curl line. Ctrl-C stops everything it
# started; data survives a restart.
#
# Anything set in the environment wins: DATABASE_URL, REDIS_URL, KILN_BUILDERS or
# BUILDKIT_HOST, KILN_S3_BUCKET (+ endpoint/keys), KILN_PORT, ... (see packages/core/src/config.ts).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${KILN_STATE_DIR:-$ROOT/.kiln}
# shellcheck source=lib/ensure-deps.sh
source "$ROOT/scripts/lib/ensure-deps.sh"
# shellcheck source=lib/dockerd.sh
source "$ROOT/scripts/lib/dockerd.sh"
# shellcheck source=lib/postgres.sh
source "$ROOT/scripts/lib/postgres.sh"
# shellcheck source=lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"

log() { printf 'kiln: %s\n' "$*" >&2; }

STARTED_PG= STARTED_REDIS= STARTED_DOCKERD= PIDS=() STARTED=()
stop_all() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	[[ -n $STARTED_DOCKERD ]] && kiln_dockerd_stop "$STARTED_DOCKERD" || true
	[[ -n $STARTED_REDIS ]] && kiln_redis_stop "$STARTED_REDIS" || true
	[[ -n $STARTED_PG ]] && kiln_pg_stop "$STARTED_PG" || true
	log "stopped"
	exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

main() {
	cd "$ROOT"
	kiln_ensure_deps run
	log "building"
	npm run build --silent >/dev/null
	mkdir -p "$STATE"

	if [[ -z ${DATABASE_URL:-} ]]; then
		mkdir -p "$STATE/postgres"
		kiln_pg_start "$STATE/postgres" "${KILN_PG_PORT:-54329}" --durable
		STARTED_PG=$STATE/postgres
		export DATABASE_URL=$REPLY
		STARTED+=("PostgreSQL   $DATABASE_URL  (data: $STATE/postgres)")
	fi
	if [[ -z ${REDIS_URL:-} ]]; then
		mkdir -p "$STATE/redis"
		kiln_redis_start "$STATE/redis" "${KILN_REDIS_PORT:-63799}" --persist
		STARTED_REDIS=$STATE/redis
		export REDIS_URL=$REPLY
		STARTED+=("Redis        $REDIS_URL  (data: $STATE/redis)")
	fi
	if [[ -z ${KILN_BUILDERS:-} && -z ${BUILDKIT_HOST:-} ]]; then
		# A private daemon beside any system one; its embedded BuildKit serves the builds.
		# It has no bridge network: Dockerfiles that RUN need network=none.
		mkdir -p "$STATE/docker"
		kiln_dockerd_start "$STATE/docker"
		STARTED_DOCKERD=$STATE/docker
		export KILN_BUILDERS=docker://$STATE/docker/docker.sock
		STARTED+=("dockerd      $KILN_BUILDERS  (BuildKit; data: $STATE/docker)")
	fi
	if [[ -z ${KILN_S3_BUCKET:-} && -z ${KILN_SIGNING_KEY:-} ]]; then
		[[ -s $STATE/signing.key ]] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/signing.key")
		KILN_SIGNING_KEY=$(<"$STATE/signing.key")
		export KILN_SIGNING_KEY
	fi
	export KILN_DATA_DIR=${KILN_DATA_DIR:-$STATE/data}
	local port=${KILN_PORT:-8080}

	local token
	token=$(node apps/api/dist/bootstrap.js --project "${KILN_PROJECT:-default}" --token-name "npm-start")
	scripts/run-app.sh api &
	PIDS+=($!)
	STARTED+=("API          http://localhost:$port  (pid $!)")
	scripts/run-app.sh worker &
	PIDS+=($!)
	STARTED+=("worker       (pid $!)")

	local i
	for ((i = 0; i < 100; i++)); do
		node -e "fetch(process.argv[1]).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))" "http://127.0.0.1:$port/healthz" && break
		kill -0 "${PIDS[0]}" 2>/dev/null || { log "the API exited during start-up"; return 1; }
		sleep 0.2
	done
	printf '\n%s\n' "$token"
	cat <<TXT

Kiln is listening on http://localhost:$port (API docs: /docs, dashboard: /ui/). Started:
$(printf '  %s\n' "${STARTED[@]}")
State: $STATE (artifacts and logs in $KILN_DATA_DIR); it survives a restart, \`rm -rf $STATE\` forgets it.
Stop: Ctrl-C here, or \`kill $$\`; either stops everything listed above.

Try:

  export ${token}
  tar -C myapp -czf ctx.tgz . && curl -sS -H "Authorization: Bearer \$KILN_TOKEN" -H 'Content-Type: application/gzip' \\
       --data-binary @ctx.tgz 'http://localhost:$port/v1/builds?output=type=tar,dest=myapp.tar'
TXT
	# Whichever process ends first ends the whole service.
	wait -n "${PIDS[@]}"
}

main "$@"
