#!/usr/bin/env bash
# Private redis-server from the system's packages, for tests and `npm start`.
#
#   scripts/lib/redis.sh start DIR PORT [--persist]
#   scripts/lib/redis.sh stop DIR
# or source it and call kiln_redis_start DIR PORT [--persist] / kiln_redis_stop DIR.
#
# Listens on 127.0.0.1:PORT only; the URL is redis://127.0.0.1:PORT (also left in REPLY).
# Without --persist nothing is written to disk (a test's data dies with the server). With
# --persist an append-only file in DIR keeps queued jobs across restarts. Starting a server
# that already runs for DIR on PORT is a no-op. Nothing goes to stdout.

REDIS_SERVER_BIN=${KILN_REDIS_SERVER_BIN:-/usr/bin/redis-server}
REDIS_CLI_BIN=${KILN_REDIS_CLI_BIN:-/usr/bin/redis-cli}
# Seconds to wait for the server to start or stop; overridable for slow machines.
: "${KILN_REDIS_TIMEOUT:=30}"
# shellcheck source=process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

_kiln_redis_log() { printf 'redis.sh: %s\n' "$*" >&2; }

# True when PID is a live (non-zombie) process whose command line names DIR's config file.
# The process title template below puts the config path there, which guards against
# signalling a recycled pid or another directory's server.
_kiln_redis_pid_is_ours() {
	local pid=$1 dir=$2 argv
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kiln_pid_alive "$pid" || return 1
	mapfile -d '' argv 2>/dev/null <"/proc/$pid/cmdline" || return 1
	[[ "${argv[*]}" == *"$dir/redis.conf"* ]]
}

# The pid of DIR's running server, if any. Redis writes its pid file only once it
# listens, so without one this looks through /proc (the config path is in every
# command line the server has: the original argv and the process title).
_kiln_redis_pid() {
	local dir=$1 pid p
	if [[ -f $dir/redis.pid ]]; then
		pid=$(<"$dir/redis.pid") || pid=
		_kiln_redis_pid_is_ours "$pid" "$dir" && { echo "$pid"; return 0; }
	fi
	for p in /proc/[0-9]*; do
		_kiln_redis_pid_is_ours "${p#/proc/}" "$dir" && { echo "${p#/proc/}"; return 0; }
	done
	return 1
}

_kiln_redis_ping() {
	[[ $(timeout 2 "$REDIS_CLI_BIN" -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]
}

_kiln_redis_tail_log() {
	_kiln_redis_log "$1; last lines of $2:"
	tail -n 25 "$2" >&2 2>/dev/null || true
}

kiln_redis_start() {
	local dir=${1:?usage: kiln_redis_start DIR PORT [--persist]}
	local port=${2:?usage: kiln_redis_start DIR PORT [--persist]}
	local persist=${3:-}
	local pid deadline
	[[ $port =~ ^[0-9]+$ ]] || {
		_kiln_redis_log "bad port: $port"
		return 1
	}
	[[ -z $persist || $persist == --persist ]] || {
		_kiln_redis_log "unknown option: $persist"
		return 1
	}
	mkdir -p "$dir" || return 1
	dir=$(cd "$dir" && pwd) || return 1
	# Config file syntax: a quoted path cannot hold a double quote or backslash.
	if [[ $dir == *[\"\\]* ]]; then
		_kiln_redis_log "directory path must not contain quotes or backslashes: $dir"
		return 1
	fi

	if pid=$(_kiln_redis_pid "$dir"); then
		local running_port
		running_port=$(cat "$dir/redis.port" 2>/dev/null) || running_port=unknown
		if [[ $running_port != "$port" ]]; then
			_kiln_redis_log "the server for $dir already runs on port $running_port, not $port; stop it first"
			return 1
		fi
		_kiln_redis_ping "$port" && { REPLY=redis://127.0.0.1:$port; return 0; }
		_kiln_redis_log "the server for $dir (pid $pid) does not answer; restarting it"
		kiln_redis_stop "$dir" || return 1
	fi

	# A config file rather than flags: its path lands in the process title (see above), and
	# the settings are rewritten on every start, so switching --persist takes effect.
	{
		echo "bind 127.0.0.1"
		echo "port $port"
		echo "dir \"$dir\""
		echo "pidfile \"$dir/redis.pid\""
		echo "logfile \"$dir/redis.log\""
		# Daemonized, Redis detaches from our session: Ctrl-C in the caller's terminal does
		# not reach it, and kiln_redis_stop shuts it down by its pid file.
		echo "daemonize yes"
		echo "proc-title-template \"{title} {listen-addr} {config-file}\""
		echo "save \"\""
		if [[ -n $persist ]]; then
			# AOF, fsynced every second: at most a second of writes lost on an OS crash.
			echo "appendonly yes"
			echo "appendfsync everysec"
		else
			echo "appendonly no"
		fi
	} >"$dir/redis.conf" || return 1
	echo "$port" >"$dir/redis.port" || return 1
	rm -f "$dir/redis.pid"
	# Creates the log file first so that a failure to even parse the config is visible there.
	if ! "$REDIS_SERVER_BIN" "$dir/redis.conf" </dev/null >>"$dir/redis.log" 2>&1; then
		_kiln_redis_tail_log "redis-server failed to start" "$dir/redis.log"
		return 1
	fi
	deadline=$((SECONDS + KILN_REDIS_TIMEOUT))
	while :; do
		# The launching process has exited, so the daemon is either running or gone.
		if ! _kiln_redis_pid "$dir" >/dev/null; then
			_kiln_redis_tail_log "redis-server exited during startup" "$dir/redis.log"
			return 1
		fi
		_kiln_redis_ping "$port" && break
		if ((SECONDS >= deadline)); then
			_kiln_redis_tail_log "redis-server not ready after ${KILN_REDIS_TIMEOUT}s" "$dir/redis.log"
			kiln_redis_stop "$dir" || true
			return 1
		fi
		sleep 0.05
	done
	# Something else may already listen on PORT and answer PONG: make sure it is ours.
	_kiln_redis_pid "$dir" >/dev/null || {
		_kiln_redis_tail_log "port $port answers but not from our redis-server" "$dir/redis.log"
		return 1
	}
	REPLY=redis://127.0.0.1:$port
}

# SIGTERM makes Redis finish its append-only file (when --persist) and exit; waits for
# that, then SIGKILL. Safe to call twice, on a stopped server, or on a DIR without one.
kiln_redis_stop() {
	local dir=${1:?usage: kiln_redis_stop DIR}
	local pid
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd) || return 1
	pid=$(_kiln_redis_pid "$dir") || return 0
	kiln_stop_pid _kiln_redis_log "redis-server (pid $pid)" "$pid" "$KILN_REDIS_TIMEOUT" _kiln_redis_pid_is_ours "$pid" "$dir"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start)
		kiln_redis_start "${2:?usage: $0 start DIR PORT [--persist]}" "${3:?usage: $0 start DIR PORT [--persist]}" ${4:+"$4"}
		;;
	stop) kiln_redis_stop "${2:?usage: $0 stop DIR}" ;;
	*)
		echo "usage: $0 start DIR PORT [--persist] | stop DIR" >&2
		exit 2
		;;
	esac
fi
