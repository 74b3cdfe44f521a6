#!/usr/bin/env bash
# Private OCI registry (Debian's docker-registry, distribution v2) on loopback, with basic auth.
#
#   scripts/lib/registry.sh start DIR PORT USER PASSWORD
#   scripts/lib/registry.sh stop DIR
# or source it and call kiln_registry_start / kiln_registry_stop.
#
# Plain HTTP on 127.0.0.1:PORT (builders push with registry.insecure=true); blobs in DIR/data;
# one user from an htpasswd file (bcrypt, as the registry requires).
REGISTRY_BIN=${KILN_REGISTRY_BIN:-/usr/bin/docker-registry}
: "${KILN_REGISTRY_TIMEOUT:=30}"
# shellcheck source=process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

_kiln_registry_log() { printf 'registry.sh: %s\n' "$*" >&2; }

_kiln_registry_pid_is_ours() { kiln_pid_mentions "$1" "$2/config.yml"; }

kiln_registry_start() {
	local usage='usage: kiln_registry_start DIR PORT USER PASSWORD'
	local dir=${1:?$usage} port=${2:?$usage} user=${3:?$usage} password=${4:?$usage} pid
	dir=$(cd "$dir" && pwd) || return 1
	[[ -x $REGISTRY_BIN ]] || { _kiln_registry_log "$REGISTRY_BIN is missing (Debian package docker-registry)"; return 1; }
	mkdir -p "$dir/data"
	# The password reaches python on stdin, never a command line.
	printf '%s' "$password" | python3 -W ignore -c '
import crypt, sys
print(sys.argv[1] + ":" + crypt.crypt(sys.stdin.read(), crypt.mksalt(crypt.METHOD_BLOWFISH)))
' "$user" >"$dir/htpasswd" || return 1
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: kiln-test-registry
auth:
  htpasswd:
    realm: kiln-test
    path: $dir/htpasswd
EOF
	"$REGISTRY_BIN" serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/registry.pid"
	local deadline=$((SECONDS + KILN_REGISTRY_TIMEOUT))
	# /v2/ answers 401 once it listens (auth is on).
	until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/") == 401 ]]; do
		if ! kiln_pid_alive "$pid" || ((SECONDS >= deadline)); then
			_kiln_registry_log "the registry did not come up; last lines of $dir/registry.log:"
			tail -n 25 "$dir/registry.log" >&2
			kiln_registry_stop "$dir" || true
			return 1
		fi
		sleep 0.1
	done
	REPLY=127.0.0.1:$port
}

kiln_registry_stop() {
	local dir=${1:?usage: kiln_registry_stop DIR} pid
	[[ -f $dir/registry.pid ]] || return 0
	pid=$(<"$dir/registry.pid")
	kiln_stop_pid _kiln_registry_log "registry $pid" "$pid" 10 _kiln_registry_pid_is_ours "$pid" "$dir"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start)
		kiln_registry_start "${2:?}" "${3:?}" "${4:?}" "${5:?}"
		echo "$REPLY"
		;;
	stop) kiln_registry_stop "${2:?}" ;;
	*)
		echo "usage: $0 start DIR PORT USER PASSWORD | stop DIR" >&2
		exit 2
		;;
	esac
fi
