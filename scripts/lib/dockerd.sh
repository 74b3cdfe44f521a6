#!/usr/bin/env bash
# Private, throw-away Docker daemon for tests.
#
#   scripts/lib/dockerd.sh start DIR    # DIR must be short, e.g. from mktemp -d /tmp/kiln-XXXX
#   scripts/lib/dockerd.sh stop DIR
# or source it and call kiln_dockerd_start DIR / kiln_dockerd_stop DIR (the daemons are
# then children of your shell, so wait for specific pids only: a bare `wait` never returns).
#
# The daemon listens on unix://DIR/docker.sock. It gets its own containerd that we start
# ourselves: left alone, dockerd 20.10 silently reuses the host's containerd whenever
# /run/containerd/containerd.sock exists (and would then share the "moby" namespace with
# the host's dockerd), and only otherwise spawns a private one.

DOCKERD_BIN=/usr/sbin/dockerd
DOCKER_BIN=/usr/bin/docker
CONTAINERD_BIN=/usr/bin/containerd
# Seconds to wait for each daemon to come up; overridable for slow machines.
: "${KILN_DOCKERD_START_TIMEOUT:=60}"
# shellcheck source=process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

_kiln_log() { printf 'dockerd.sh: %s\n' "$*" >&2; }

# True when PID is alive and is one of DIR's processes (its command line mentions DIR/).
_kiln_pid_is_ours() { kiln_pid_mentions "$1" "$2/"; }

# Daemon processes left behind that belong to DIR, such as containerd shims, which
# daemonize away from containerd.
_kiln_pids_under() { kiln_pids_under "$1" 'dockerd|containerd|containerd-shim.*|runc|docker-proxy'; }

# Pids whose parent is PID.
_kiln_children_of() {
	local parent=$1 f stat rest
	for f in /proc/[0-9]*/stat; do
		read -r stat 2>/dev/null <"$f" || continue
		rest=${stat##*) }
		rest=${rest#* }
		[[ ${rest%% *} == "$parent" ]] && echo "${stat%% *}"
	done
	return 0
}

_kiln_docker_answers() {
	[[ -S $1 ]] && timeout 5 "$DOCKER_BIN" -H "unix://$1" version >/dev/null 2>&1
}

# Polls CHECK... until it succeeds. On failure (NAME died or the timeout passed) shows
# the end of LOG and cleans up whatever was started in DIR.
_kiln_wait_until() {
	local dir=$1 name=$2 pid=$3 log=$4 problem
	shift 4
	local deadline=$((SECONDS + KILN_DOCKERD_START_TIMEOUT))
	until "$@"; do
		if ! kiln_pid_alive "$pid"; then
			problem="$name exited during startup"
		elif ((SECONDS >= deadline)); then
			problem="$name not ready after ${KILN_DOCKERD_START_TIMEOUT}s"
		else
			sleep 0.1
			continue
		fi
		_kiln_log "$problem; last lines of $log:"
		tail -n 25 "$log" >&2
		kiln_dockerd_stop "$dir" || true
		return 1
	done
}

_kiln_write_containerd_config() {
	local dir=$1
	# Every path the daemon would otherwise default to a host location points into DIR.
	cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/data/containerd"
state = "$dir/exec/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$dir/exec/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/data/containerd/opt"

[plugins."io.containerd.runtime.v1.linux"]
  runtime_root = "$dir/data/runc"
EOF
}

kiln_dockerd_start() {
	local dir=${1:?usage: kiln_dockerd_start DIR}
	local csock sock
	dir=$(cd "$dir" && pwd) || return 1
	csock="$dir/exec/containerd/containerd.sock"
	sock="$dir/docker.sock"
	# sun_path holds 108 bytes; the shim's .ttrpc socket is the longest path we create.
	if ((${#csock} + 6 > 107)); then
		_kiln_log "directory path too long for unix sockets: $dir"
		return 1
	fi
	mkdir -p "$dir/data" "$dir/exec/containerd" "$dir/spawned"
	_kiln_write_containerd_config "$dir"
	# Our own config file keeps a host /etc/docker/daemon.json out of the picture. The key
	# (dockerd 20.10's config-file-only setting) gives each daemon its own ID instead of
	# sharing /etc/docker/key.json with every other dockerd on the machine.
	printf '{"deprecated-key-path": "%s"}\n' "$dir/key.json" >"$dir/daemon.json"

	"$CONTAINERD_BIN" --config "$dir/containerd.toml" --log-level warn \
		</dev/null >"$dir/containerd.log" 2>&1 &
	echo $! >"$dir/spawned/containerd"
	_kiln_wait_until "$dir" containerd $! "$dir/containerd.log" test -S "$csock" || return 1

	# No bridge or iptables: builds need only --network=none and the host stays untouched.
	"$DOCKERD_BIN" \
		--config-file "$dir/daemon.json" \
		--containerd "$csock" \
		--data-root "$dir/data" \
		--exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid" \
		-H "unix://$sock" \
		--bridge=none --iptables=false --ip6tables=false \
		</dev/null >"$dir/dockerd.log" 2>&1 &
	echo $! >"$dir/spawned/dockerd"
	_kiln_wait_until "$dir" dockerd $! "$dir/dockerd.log" _kiln_docker_answers "$sock"
}

# Safe to call twice, or after a failed start.
kiln_dockerd_stop() {
	local dir=${1:?usage: kiln_dockerd_stop DIR}
	local rc=0 name pid child
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd) || return 1
	# dockerd first: it stops its containers through containerd.
	for name in dockerd containerd; do
		[[ -f $dir/spawned/$name ]] || continue
		pid=$(<"$dir/spawned/$name")
		kiln_stop_pid _kiln_log "pid $pid" "$pid" 20 _kiln_pid_is_ours "$pid" "$dir" || rc=1
	done
	for pid in $(_kiln_pids_under "$dir"); do
		_kiln_log "stopping leftover process $pid ($(readlink "/proc/$pid/exe" 2>/dev/null))"
		# A shim's child is a container's init: it would outlive the shim as an orphan,
		# and killing it takes down the rest of the container's pid namespace.
		for child in $(_kiln_children_of "$pid"); do
			kill -KILL "$child" 2>/dev/null || true
		done
		kiln_stop_pid _kiln_log "pid $pid" "$pid" 5 _kiln_pid_is_ours "$pid" "$dir" || rc=1
	done
	kiln_unmount_below "$dir"
	return "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start) kiln_dockerd_start "${2:?usage: $0 start DIR}" ;;
	stop) kiln_dockerd_stop "${2:?usage: $0 stop DIR}" ;;
	*)
		echo "usage: $0 start|stop DIR" >&2
		exit 2
		;;
	esac
fi
