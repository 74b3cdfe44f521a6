#!/usr/bin/env bash
# Shared by bench/run.sh, bench/service.sh and bench/fleet.sh. Source it once ROOT, RESULTS, START_EPOCH and a
# `log` function are set.

# Sets GIT_HEAD, and GIT_DIRTY to the number of changed paths under PATH..., for the results.
bench_git_state() {
	GIT_HEAD=$(git -C "$ROOT" --no-optional-locks rev-parse HEAD 2>/dev/null || echo unknown)
	GIT_DIRTY=$(git -C "$ROOT" --no-optional-locks status --porcelain -- "$@" 2>/dev/null |
		wc -l || echo unknown)
}

# Removes PROFILE_DIR unless CPU profiles were left in it, then renders RESULTS/NAME.json into
# RESULTS/NAME.md with bench/lib/REPORT and prints that. Fails when REPORT does (a missed target),
# after printing.
bench_report() {
	local report=$1 name=$2 rc=0
	[[ -z $PROFILE_DIR ]] || rmdir "$PROFILE_DIR" 2>/dev/null || log "CPU profiles kept in $PROFILE_DIR"
	PROFILE_DIR=
	node "$ROOT/bench/lib/$report" "$RESULTS/$name.json" "$RESULTS/$name.md" "$START_EPOCH" || rc=$?
	cat "$RESULTS/$name.md"
	return "$rc"
}

# Start time (clock ticks since boot) of a live, non-zombie PID; fails otherwise.
_start_time() {
	local stat f
	read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
	read -ra f <<<"${stat##*) }"
	[[ ${f[0]} != Z ]] || return 1
	echo "${f[19]}"
}

# SIGTERM the process PID that started at START (never a recycled pid), wait up to GRACE s, then SIGKILL.
_stop_proc() {
	local pid=$1 start=$2 grace=$3 i now
	[[ -n $pid && -n $start ]] || return 0
	now=$(_start_time "$pid") || return 0
	[[ $now == "$start" ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < grace * 10; i++)); do
		now=$(_start_time "$pid") || return 0
		[[ $now == "$start" ]] || return 0
		sleep 0.1
	done
	log "pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

# Two benchmarks must never share the CPU: wait while bench/run.sh (bench/lib/measure.mjs) runs.
wait_for_other_benchmark() {
	local waited=0
	while pgrep -f 'bench/lib/[m]easure\.mjs|bench/[r]un\.sh' >/dev/null; do
		((waited > 0)) || log 'another benchmark (bench/run.sh) is running: waiting for it to finish, polling every 30 s'
		sleep 30
		waited=$((waited + 30))
	done
	((waited == 0)) || log "the other benchmark finished; waited about ${waited}s"
}

free_port() {
	node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })"
}


# After a failure: the last lines of every LOG_DIR/*.log.
bench_tail_logs() {
	local f
	for f in "$1"/*.log; do
		[[ -f $f ]] || continue
		log "last lines of $(basename "$f"):"
		tail -n 15 "$f" >&2 || true
	done
}
