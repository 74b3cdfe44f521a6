#!/usr/bin/env bash
# Where the workspace's tests are. Source it and call kiln_test_files from the repository root.

# Prints the test files whose name ends with $1 (default .test.ts), one per line, sorted.
kiln_test_files() {
	local suffix=${1:-.test.ts} dir
	local -a roots=()
	for dir in packages/*/src packages/*/test packages/*/test-support apps/*/src apps/*/test test; do
		[[ -d $dir ]] && roots+=("$dir")
	done
	((${#roots[@]} > 0)) || return 0
	find "${roots[@]}" -name node_modules -prune -o -name "*$suffix" -type f -print | sort
}
