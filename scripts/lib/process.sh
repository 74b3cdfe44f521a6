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
