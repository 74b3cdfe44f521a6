#!/usr/bin/env bash
# Runs test files with Node's test runner through tsx. Source it; the caller's INT/TERM traps
# should stop KILN_TEST_RUNNER_PID while it is set.

KILN_TEST_RUNNER_PID=

# Usage: kiln_run_tests SUMMARY_FILE [NODE_FLAG...] -- FILE...
# Prints the spec report, then the "N passed, N failed" line of scripts/test-summary-reporter.mjs
# (written to SUMMARY_FILE so that it comes after everything else). Fails when a test failed, the
# runner wrote no summary, or no test ran.
kiln_run_tests() {
	local root summary=$1 rc=0
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	shift
	local -a flags=()
	while (($# > 0)) && [[ $1 != -- ]]; do
		flags+=("$1")
		shift
	done
	shift
	# In the background so that INT/TERM traps run at once instead of after the tests.
	node "${flags[@]}" --import tsx --test \
		--test-reporter=spec --test-reporter-destination=stdout \
		--test-reporter="$root/scripts/test-summary-reporter.mjs" --test-reporter-destination="$summary" \
		"$@" &
	KILN_TEST_RUNNER_PID=$!
	wait "$KILN_TEST_RUNNER_PID" || rc=$?
	KILN_TEST_RUNNER_PID=
	if [[ ! -s $summary ]]; then
		printf '%s: the test runner wrote no summary\n' "${0##*/}" >&2
		return 1
	fi
	cat "$summary"
	if ((rc == 0)) && [[ $(<"$summary") == "0 passed, 0 failed"* ]]; then
		printf '%s: no tests ran\n' "${0##*/}" >&2
		rc=1
	fi
	return "$rc"
}
