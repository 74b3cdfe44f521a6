#!/usr/bin/env bash
# Process helpers shared by the service scripts (dockerd.sh, redis.sh). Source it.

# True when PID exists and is not a zombie (our own exited children linger as zombies).
kiln_pid_alive() {
	local stat
	[[ -n $1 ]] || return 1
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# Usage: kiln_stop_pid LOG WHAT PID GRACE CHECK...
# SIGTERM to PID, waits up to GRACE seconds, then SIGKILL and up to 5 s more. CHECK... (a
# command) is true while PID is still the process meant, so a recycled pid is never signalled.
# LOG is the caller's log function; WHAT names the process in its messages.
kiln_stop_pid() {
	local log=$1 what=$2 pid=$3 grace=$4 i
	shift 4
	"$@" || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < grace * 20; i++)); do
		"$@" || return 0
		sleep 0.05
	done
	"$log" "$what ignored SIGTERM for ${grace}s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		"$@" || return 0
		sleep 0.05
	done
	"$log" "$what still alive after SIGKILL"
	return 1
}

# True when PID is alive and its command line mentions TEXT (a daemon's private directory or
# config file), which guards against signalling a recycled pid. Not usable right after a fork:
# the exec may not have happened yet.
kiln_pid_mentions() {
	local pid=$1 text=$2 argv
	kiln_pid_alive "$pid" || return 1
	mapfile -d '' argv 2>/dev/null <"/proc/$pid/cmdline" || return 1
	[[ "${argv[*]}" == *"$text"* ]]
}

# Pids of processes left behind in DIR: their executable's name matches NAMES (an extended
# regular expression) and their command line mentions DIR/. DIR comes from mktemp, so these can
# only be ours.
kiln_pids_under() {
	local dir=$1 names=$2 p exe
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
		[[ ${exe##*/} =~ ^($names)$ ]] || continue
		kiln_pid_mentions "$p" "$dir/" && echo "$p"
	done
	return 0
}

# Lazily detaches anything still mounted below DIR (deepest first) so it can be removed.
kiln_unmount_below() {
	awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
		while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}
