#!/usr/bin/env bash
# Private PostgreSQL cluster from the system's packages, for tests and `npm start`.
#
#   scripts/lib/postgres.sh start DIR PORT [--durable]
#   scripts/lib/postgres.sh stop DIR
# or source it and call kiln_pg_start DIR PORT [--durable] / kiln_pg_stop DIR.
#
# The cluster lives in DIR/pgdata and listens on 127.0.0.1:PORT (trust auth, superuser
# `postgres`) and on a unix socket in DIR/run. Start creates the database `kiln`; the URL is
# postgresql://postgres@127.0.0.1:PORT/kiln (also left in REPLY). Nothing goes to stdout.
# Starting a DIR that already holds a cluster reuses it, data included; starting one that
# is already running on PORT is a no-op.
#
# Without --durable, fsync and full-page writes are off: fast, and safe against a crash of
# PostgreSQL itself, but an OS crash or power loss can corrupt the cluster. Fine for tests;
# pass --durable for data worth keeping.

# Seconds to wait for the server to start or stop; overridable for slow machines.
: "${KILN_PG_TIMEOUT:=60}"

_kiln_pg_log() { printf 'postgres.sh: %s\n' "$*" >&2; }

# The newest installed server's bin directory, unless KILN_PG_BIN names one.
_kiln_pg_bin() {
	if [[ -n ${KILN_PG_BIN:-} ]]; then
		echo "$KILN_PG_BIN"
		return 0
	fi
	local dir best=
	for dir in /usr/lib/postgresql/*/bin; do
		[[ -x $dir/postgres ]] || continue
		# Numeric compare of the major version (10 > 9).
		if [[ -z $best ]] || ((${dir//[^0-9]/} > ${best//[^0-9]/})); then best=$dir; fi
	done
	[[ -n $best ]] || {
		_kiln_pg_log "no PostgreSQL server found under /usr/lib/postgresql (apt-get install postgresql)"
		return 1
	}
	echo "$best"
}

# Runs a server binary as the cluster owner: PostgreSQL refuses to run as root, so root
# hands it to the `postgres` OS user; anyone else runs it as themselves. From / because
# the caller's directory (e.g. /root) may be unreadable to that user.
_kiln_pg_as_owner() {
	if ((EUID == 0)); then
		(cd / && runuser -u postgres -- "$@")
	else
		(cd / && "$@")
	fi
}

# Prints the port a running cluster listens on (4th line of postmaster.pid), if any.
_kiln_pg_running_port() {
	local pgdata=$1 bin=$2 port
	_kiln_pg_as_owner "$bin/pg_ctl" status -D "$pgdata" >/dev/null 2>&1 || return 1
	port=$(sed -n 4p "$pgdata/postmaster.pid" 2>/dev/null) || return 1
	echo "$port"
}

_kiln_pg_tail_log() {
	_kiln_pg_log "$1; last lines of $2:"
	tail -n 25 "$2" >&2 2>/dev/null || true
}

# Root only: the postgres user must be able to traverse every directory down to DIR, but
# mktemp -d makes directories 0700. Grants o+x (traverse, not list) on DIR and on blocking
# ancestors inside the temp directory; anything else blocking is reported, not changed.
_kiln_pg_grant_traverse() {
	local dir=$1 p tmp
	tmp=$(cd "${TMPDIR:-/tmp}" && pwd -P) || tmp=/tmp
	chmod o+x "$dir" || return 1
	p=$dir
	while [[ $p != / ]]; do
		p=$(dirname "$p")
		runuser -u postgres -- test -x "$p" 2>/dev/null && continue
		if [[ $p == "$tmp"/* ]]; then
			chmod o+x "$p" || return 1
		else
			_kiln_pg_log "the postgres user cannot enter $p, so cannot reach $dir: use a directory it can reach (e.g. under /tmp) or chmod o+x $p"
			return 1
		fi
	done
}

kiln_pg_start() {
	local dir=${1:?usage: kiln_pg_start DIR PORT [--durable]}
	local port=${2:?usage: kiln_pg_start DIR PORT [--durable]}
	local durable=${3:-}
	local bin pgdata rundir logfile running opts
	[[ $port =~ ^[0-9]+$ ]] || {
		_kiln_pg_log "bad port: $port"
		return 1
	}
	[[ -z $durable || $durable == --durable ]] || {
		_kiln_pg_log "unknown option: $durable"
		return 1
	}
	bin=$(_kiln_pg_bin) || return 1
	mkdir -p "$dir" || return 1
	dir=$(cd "$dir" && pwd) || return 1
	# pg_ctl runs -o through /bin/sh: refusing such paths keeps the quoting below trivial.
	if [[ $dir == *[[:space:]\'\"\\\$\`]* ]]; then
		_kiln_pg_log "directory path must not contain spaces or quotes: $dir"
		return 1
	fi
	pgdata=$dir/pgdata
	rundir=$dir/run
	logfile=$dir/postgres.log
	# sun_path holds 108 bytes, including the trailing NUL.
	if ((${#rundir} + ${#port} + 12 > 107)); then
		_kiln_pg_log "directory path too long for a unix socket: $dir"
		return 1
	fi

	if running=$(_kiln_pg_running_port "$pgdata" "$bin"); then
		if [[ $running != "$port" ]]; then
			_kiln_pg_log "the cluster in $pgdata is already running on port $running, not $port; stop it first"
			return 1
		fi
	else
		mkdir -p "$rundir" || return 1
		touch "$logfile" || return 1
		if ((EUID == 0)); then
			_kiln_pg_grant_traverse "$dir" || return 1
			chown postgres: "$rundir" "$logfile" || return 1
		fi
		if [[ ! -f $pgdata/PG_VERSION ]]; then
			# Into a side directory first, so an interrupted initdb never leaves a half cluster
			# that a later start would take for a real one.
			rm -rf "$pgdata.init" || return 1
			mkdir -p "$pgdata.init" || return 1
			((EUID != 0)) || chown postgres: "$pgdata.init" || return 1
			if ! _kiln_pg_as_owner "$bin/initdb" -D "$pgdata.init" -U postgres --auth=trust \
				--encoding=UTF8 --locale=C.UTF-8 --no-sync --no-instructions >"$dir/initdb.log" 2>&1; then
				_kiln_pg_tail_log "initdb failed" "$dir/initdb.log"
				return 1
			fi
			mv "$pgdata.init" "$pgdata" || return 1
		fi
		opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$rundir'"
		# Committing without waiting for the WAL flush can lose the last moments of work on a
		# crash but never corrupts, so it stays on even for --durable.
		opts+=" -c synchronous_commit=off"
		[[ -n $durable ]] || opts+=" -c fsync=off -c full_page_writes=off"
		# -w waits until the postmaster reports ready (or died); pg_ctl also detaches it from
		# our session, so Ctrl-C in the caller's terminal does not reach it.
		if ! _kiln_pg_as_owner "$bin/pg_ctl" start -D "$pgdata" -l "$logfile" -o "$opts" \
			-w -t "$KILN_PG_TIMEOUT" >/dev/null 2>&1; then
			_kiln_pg_tail_log "PostgreSQL did not start on port $port (exited, or not ready within ${KILN_PG_TIMEOUT}s)" "$logfile"
			kiln_pg_stop "$dir" || true
			return 1
		fi
	fi

	# Over TCP with trust auth, any OS user may connect as `postgres`.
	local -a psql=("$bin/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
	local exists
	exists=$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'kiln'") || {
		_kiln_pg_log "cannot query PostgreSQL on 127.0.0.1:$port"
		return 1
	}
	if [[ $exists != 1 ]]; then
		# A concurrent start may win the race; what matters is that the database exists.
		"${psql[@]}" -c 'CREATE DATABASE kiln' >/dev/null 2>&1 ||
			[[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'kiln'") == 1 ]] || {
			_kiln_pg_log "could not create database kiln"
			return 1
		}
	fi
	REPLY=postgresql://postgres@127.0.0.1:$port/kiln
}

# Fast shutdown (rolls back open transactions, disconnects clients), waiting for it to
# finish. Safe to call twice, on a stopped cluster, or on a DIR without one.
kiln_pg_stop() {
	local dir=${1:?usage: kiln_pg_stop DIR}
	local bin pgdata
	[[ -f $dir/pgdata/PG_VERSION ]] || return 0
	dir=$(cd "$dir" && pwd) || return 1
	pgdata=$dir/pgdata
	bin=$(_kiln_pg_bin) || return 1
	_kiln_pg_running_port "$pgdata" "$bin" >/dev/null || return 0
	_kiln_pg_as_owner "$bin/pg_ctl" stop -D "$pgdata" -m fast -w -t "$KILN_PG_TIMEOUT" >/dev/null 2>&1 && return 0
	_kiln_pg_running_port "$pgdata" "$bin" >/dev/null || return 0
	# Fast shutdown waits for checkpoints and stuck backends; immediate does not.
	_kiln_pg_log "fast shutdown did not finish in ${KILN_PG_TIMEOUT}s, using immediate"
	_kiln_pg_as_owner "$bin/pg_ctl" stop -D "$pgdata" -m immediate -w -t "$KILN_PG_TIMEOUT" >/dev/null 2>&1 || {
		_kiln_pg_tail_log "PostgreSQL in $pgdata did not stop" "$dir/postgres.log"
		return 1
	}
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start)
		kiln_pg_start "${2:?usage: $0 start DIR PORT [--durable]}" "${3:?usage: $0 start DIR PORT [--durable]}" ${4:+"$4"}
		;;
	stop) kiln_pg_stop "${2:?usage: $0 stop DIR}" ;;
	*)
		echo "usage: $0 start DIR PORT [--durable] | stop DIR" >&2
		exit 2
		;;
	esac
fi
