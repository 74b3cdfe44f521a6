#!/usr/bin/env bash
# Runs the unit tests: the *.unit.test.ts files, which need no service (dockerd, PostgreSQL,
# Redis, S3, Chromium). They run from source through tsx, workspace packages included (the
# `kiln-source` export condition), so nothing is built and nothing is started.
#   npm run test:unit                              # all unit tests
#   npm run test:unit -- path/to/a.unit.test.ts    # only these files
# `npm test` runs them as well, with every other test.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CALLER_CWD=${INIT_CWD:-$PWD}
# shellcheck source=lib/ensure-deps.sh
source "$ROOT/scripts/lib/ensure-deps.sh"
# shellcheck source=lib/test-files.sh
source "$ROOT/scripts/lib/test-files.sh"
# shellcheck source=lib/test-run.sh
source "$ROOT/scripts/lib/test-run.sh"

log() { printf 'test-unit.sh: %s\n' "$*" >&2; }

SUMMARY=
cleanup() {
	local rc=$?
	if [[ -n $KILN_TEST_RUNNER_PID ]] && kill -TERM "$KILN_TEST_RUNNER_PID" 2>/dev/null; then
		wait "$KILN_TEST_RUNNER_PID" || true
	fi
	[[ -z $SUMMARY ]] || rm -f "$SUMMARY"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the unit test files to run: the arguments (relative to the caller's directory), each
# of which must be a *.unit.test.ts, or every one in the workspace.
list_unit_test_files() {
	local arg
	(($# > 0)) || {
		kiln_test_files .unit.test.ts
		return 0
	}
	for arg in "$@"; do
		[[ $arg == /* ]] || arg=$CALLER_CWD/$arg
		[[ -f $arg ]] || { log "no such test file: $arg"; return 1; }
		[[ $arg == *.unit.test.ts ]] || { log "not a unit test (*.unit.test.ts): $arg"; return 1; }
		echo "$arg"
	done
}

# Generated from prisma/schema.prisma by `npm run build` too; @kiln/core's source imports it.
ensure_prisma_client() {
	[[ $ROOT/packages/core/src/db/generated/client.ts -nt $ROOT/prisma/schema.prisma ]] && return 0
	log "generating the Prisma client"
	npm run generate --silent --workspace=@kiln/core >&2
}

main() {
	cd "$ROOT"
	kiln_ensure_node_modules "$ROOT"
	local listing
	local -a files
	listing=$(list_unit_test_files "$@")
	[[ -n $listing ]] || { log "no unit test files found"; return 1; }
	mapfile -t files <<<"$listing"
	if ! kiln_unit_tests_using_services "${files[@]}" >&2; then
		log "the unit tests above use a service: rename them to *.test.ts (npm test runs those)"
		return 1
	fi
	ensure_prisma_client
	# Without the variables, a test that reaches a service anyway fails rather than finds one.
	unset "${!KILN_TEST_@}"
	SUMMARY=$(mktemp /tmp/kiln-unit-summary-XXXX)
	kiln_run_tests "$SUMMARY" --conditions=kiln-source --test-concurrency=2 -- "${files[@]}"
}

main "$@"
