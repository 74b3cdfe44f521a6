#!/bin/sh
# preStop of a buildkitd pod. Asks Kiln to give this builder no new builds, then waits until no
# Kiln lease names it, or until DRAIN_TIMEOUT_SECONDS (keep it under the pod's
# terminationGracePeriodSeconds), after which its builds fail over to other builders.
# Only busybox sh and wget (what the buildkitd image has). The pod reaches neither Redis nor
# PostgreSQL, so it asks the API (POST /v1/builders/drain, behind KILN_BUILDER_DRAIN_TOKEN).
# Environment: DRAIN_API_URL, DRAIN_TOKEN, DRAIN_IP (the pod's IP), DRAIN_PORT (default 1234),
# DRAIN_TIMEOUT_SECONDS (default 300), DRAIN_POLL_SECONDS (default 2).
set -u
port=${DRAIN_PORT:-1234}
timeout=${DRAIN_TIMEOUT_SECONDS:-300}
poll=${DRAIN_POLL_SECONDS:-2}
case $DRAIN_IP in
*:*) address="tcp://[$DRAIN_IP]:$port" ;;
*) address="tcp://$DRAIN_IP:$port" ;;
esac
# The mark outlives a few polls only, so a pod that reuses this IP later is not held back long.
body="{\"address\":\"$address\",\"seconds\":$((poll * 5 + 10))}"
start=$(date +%s)
while :; do
	answer=$(wget -q -O - --header "Authorization: Bearer $DRAIN_TOKEN" \
		--header 'Content-Type: application/json' --post-data "$body" "$DRAIN_API_URL/v1/builders/drain" 2>&1)
	load=$(printf %s "$answer" | sed -n 's/.*"load":\([0-9][0-9]*\).*/\1/p')
	if [ "$load" = 0 ]; then
		echo "kiln-drain: no Kiln build runs on $address"
		exit 0
	fi
	if [ $(($(date +%s) - start)) -ge "$timeout" ]; then
		echo "kiln-drain: $address still runs ${load:-?} Kiln builds after ${timeout} s; they will fail over"
		exit 1
	fi
	# An API that does not answer is waited for too: the grace period bounds the wait.
	echo "kiln-drain: $address runs ${load:-? (the API did not answer: $answer)} Kiln builds"
	sleep "$poll"
done
