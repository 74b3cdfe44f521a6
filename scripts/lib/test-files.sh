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

# What a unit test may not mention: the variables through which `npm test` hands its services
# to tests, and the helpers and clients that start or reach a service. A test that needs one
# is a plain *.test.ts.
KILN_SERVICE_USE='KILN_TEST_|test-support/(services|s3rver|docker|relay)\.js|test/support/|kiln-service\.js|from '\''(s3rver|playwright-core|ioredis|bullmq|pg)'\'

# Prints file:line:text for each mention of a service in the given unit test files (default:
# all of them); returns 1 when there is one.
kiln_unit_tests_using_services() {
	local -a files
	if (($# > 0)); then files=("$@"); else mapfile -t files < <(kiln_test_files .unit.test.ts); fi
	((${#files[@]} > 0)) || return 0
	! grep -HnE "$KILN_SERVICE_USE" "${files[@]}"
}
