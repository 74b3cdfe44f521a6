#!/usr/bin/env bash
# Runs Kiln's reliability tests and writes docs/reliability.md from what they report:
#   faults    test/e2e/faults*.test.ts           (processes killed, services restarted)
#   hostile   test/hostile/**/*.test.ts          (hostile-input corpora)
#   security  test/security/**/*.test.ts but tenants*, apps/api/test/rate-limit.test.ts,
#             packages/buildkit-client/test/transports.test.ts (mTLS), and the surfaces with
#             their own forgery/isolation cases: test/e2e/{webhooks,events,secrets}.test.ts
#   tenancy   test/security/tenants*.test.ts     (one project against another and the service:
#             scopes, quotas, fairness, webhooks, logs, streams across replicas, isolation, SSRF;
#             figures in the report)
#   soak      test/e2e/soak.ts                   (300 builds under random faults; not in npm test: about 4 min, and a probabilistic test)
# Files are found by glob, so new ones count on the next run. Each file runs on its own through
# `npm test -- FILE` (fresh daemons and databases), its output kept in a log directory.
#
#   scripts/reliability.sh                # everything, then writes docs/reliability.md
#   KILN_RELIABILITY_OUT=/tmp/r.md scripts/reliability.sh
#   KILN_RELIABILITY_LOGS=DIR             # keep the logs there (default: a temp dir, removed)
# Exits non-zero when a test failed (the report is written anyway, showing the failures).
set -euo pipefail
shopt -s globstar nullglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${KILN_RELIABILITY_OUT:-$ROOT/docs/reliability.md}
cd "$ROOT"

log() { printf 'reliability.sh: %s\n' "$*" >&2; }

LOGS=${KILN_RELIABILITY_LOGS:-}
if [[ -z $LOGS ]]; then
	LOGS=$(mktemp -d /tmp/kiln-reliability-XXXX)
	trap 'rm -rf "$LOGS"' EXIT
fi
mkdir -p "$LOGS"

declare -A GROUP_FILES=(
	[faults]="$(printf '%s ' test/e2e/faults*.test.ts)"
	[hostile]="$(printf '%s ' test/hostile/**/*.test.ts)"
	# test/security/tenants*.test.ts are the tenancy group's: one project against another.
	[tenancy]="$(printf '%s ' test/security/tenants*.test.ts)"
	[security]="$(printf '%s ' $(printf '%s\n' test/security/**/*.test.ts | grep -v '/tenants[^/]*$') apps/api/test/rate-limit.test.ts packages/buildkit-client/test/transports.test.ts test/e2e/webhooks.test.ts test/e2e/events.test.ts test/e2e/secrets.test.ts)"
	[soak]="$(printf '%s ' test/e2e/soak.ts)"
)

log "building"
npm run build --silent

started=$SECONDS
rc=0
: >"$LOGS/index.tsv"
for group in faults hostile security tenancy soak; do
	for file in ${GROUP_FILES[$group]}; do
		[[ -f $file ]] || continue
		name=$(echo "$file" | tr '/' '_')
		log "$group: $file"
		t0=$SECONDS
		status=0
		KILN_TEST_SKIP_BUILD=1 npm test --silent -- "$file" >"$LOGS/$name.log" 2>&1 || status=$?
		((status == 0)) || rc=1
		printf '%s\t%s\t%s\t%s\t%s\n' "$group" "$file" "$LOGS/$name.log" "$status" $((SECONDS - t0)) >>"$LOGS/index.tsv"
		log "  exit $status after $((SECONDS - t0)) s: $(tail -n 1 "$LOGS/$name.log")"
	done
done

mkdir -p "$(dirname "$OUT")"
# Rendered aside, then moved: truncating $OUT first would make the report see the tree as modified.
node scripts/lib/reliability-report.mjs "$LOGS/index.tsv" $((SECONDS - started)) >"$LOGS/report.md"
mv "$LOGS/report.md" "$OUT"
log "wrote $OUT"
exit "$rc"
