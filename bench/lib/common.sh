#!/usr/bin/env bash
# Shared by bench/run.sh and bench/service.sh. Source it once ROOT, RESULTS, START_EPOCH and a
# `log` function are set.

# Sets GIT_HEAD, and GIT_DIRTY to the number of changed paths under PATH..., for the results.
bench_git_state() {
	GIT_HEAD=$(git -C "$ROOT" --no-optional-locks rev-parse HEAD 2>/dev/null || echo unknown)
	GIT_DIRTY=$(git -C "$ROOT" --no-optional-locks status --porcelain -- "$@" 2>/dev/null |
		wc -l || echo unknown)
}

# Removes PROFILE_DIR unless CPU profiles were left in it, then renders RESULTS/NAME.json into
# RESULTS/NAME.md with bench/lib/REPORT and prints that.
bench_report() {
	local report=$1 name=$2
	rmdir "$PROFILE_DIR" 2>/dev/null || log "CPU profiles kept in $PROFILE_DIR"
	PROFILE_DIR=
	node "$ROOT/bench/lib/$report" "$RESULTS/$name.json" "$RESULTS/$name.md" "$START_EPOCH"
	cat "$RESULTS/$name.md"
}
