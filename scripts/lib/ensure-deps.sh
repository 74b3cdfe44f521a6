#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (run as root), idempotently:
# system packages when their binary is missing, then `npm ci` when node_modules is stale.
# Either execute it or source it and call kiln_ensure_deps.

_kiln_deps_log() { printf 'ensure-deps: %s\n' "$*" >&2; }

# Prints the apt packages whose binaries are missing.
_kiln_missing_apt_packages() {
	[[ -x /usr/sbin/dockerd && -x /usr/bin/docker && -x /usr/bin/containerd ]] || echo docker.io
	# The standalone buildkitd's OCI worker runs RUN steps with runc (docker.io pulls it in too).
	[[ -x /usr/sbin/runc ]] || echo runc
	# Image pushes are tested against a private registry on loopback (scripts/lib/registry.sh).
	[[ -x /usr/bin/docker-registry ]] || echo docker-registry
	# The dynamically linked `busybox` package also ships /usr/bin/busybox, but test
	# images copy it into FROM scratch, where only the static build runs.
	dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || echo busybox-static
	[[ -x /usr/bin/redis-server ]] || echo redis-server
	compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || echo postgresql
	# Only to validate docker-compose.yml in the tests: no engine runs it on these machines.
	[[ -x /usr/bin/docker-compose ]] || echo docker-compose
	# Webhook tests serve real repositories with git daemon / git http-backend.
	[[ -x /usr/bin/git && -x /usr/lib/git-core/git-http-backend ]] || echo git
	# The dashboard's end-to-end tests drive Debian's headless Chromium through playwright-core.
	[[ -x /usr/bin/chromium ]] || echo chromium
	# deploy/kubernetes is rendered with `kubectl kustomize` (kustomize v5 built in; Debian's
	# older kubernetes-client package has a kustomize too old for components).
	[[ -x /usr/bin/kubectl ]] || echo kubectl
}

kiln_ensure_apt_packages() {
	local -a missing
	mapfile -t missing < <(_kiln_missing_apt_packages)
	((${#missing[@]} > 0)) || return 0
	if ((EUID != 0)); then
		_kiln_deps_log "missing ${missing[*]} and not root: install them with apt-get"
		return 1
	fi
	_kiln_deps_log "installing ${missing[*]}"
	# Packages like postgresql and docker.io start their service from postinst; a
	# policy-rc.d answering 101 forbids that. Only add one if none is in place.
	local policy=/usr/sbin/policy-rc.d added_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		added_policy=1
	fi
	local rc=0
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		rc=$?
	[[ -z $added_policy ]] || rm -f "$policy"
	if ((rc != 0)); then
		_kiln_deps_log "apt-get failed ($rc)"
		return "$rc"
	fi
}

# npm ci wipes node_modules, so the stamp inside it also disappears when the install
# is interrupted. Without a stamp, npm's own node_modules/.package-lock.json stands in.
kiln_ensure_node_modules() {
	local root=$1
	local stamp="$root/node_modules/.kiln-npm-ci.stamp" ref
	ref=$stamp
	[[ -e $ref ]] || ref="$root/node_modules/.package-lock.json"
	if [[ -e $ref && ! $root/package-lock.json -nt $ref ]]; then
		return 0
	fi
	_kiln_deps_log "running npm ci"
	(cd "$root" && npm ci --no-audit --no-fund --loglevel=error >&2)
	touch "$stamp"
}

kiln_ensure_deps() {
	local root
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	kiln_ensure_apt_packages
	kiln_ensure_node_modules "$root"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	kiln_ensure_deps
fi
