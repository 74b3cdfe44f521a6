#!/usr/bin/env bash
# Installs what Kiln needs on a fresh Debian machine (run as root), idempotently: system
# packages when their binary is missing, then `npm ci` when node_modules is stale. Two purposes:
#   run   what `npm start` needs to build and run the service, nothing more;
#   test  that plus what only the tests and benchmarks use (the default).
# Either execute it (`ensure-deps.sh [run|test]`, or `ensure-deps.sh --list run|test` to print
# the apt packages and the npm install it would ask for, installing nothing) or source it and call
# kiln_ensure_deps [run|test].

_kiln_deps_log() { printf 'ensure-deps: %s\n' "$*" >&2; }

# Prints the apt packages a purpose needs, one a line.
kiln_apt_packages() {
	# PostgreSQL, Redis and a private dockerd (whose BuildKit builds) when none is configured;
	# BuildKit runs git itself for git contexts.
	printf '%s\n' postgresql redis-server docker.io git
	[[ $1 == test ]] || return 0
	# The standalone buildkitd's OCI worker runs RUN steps with runc (docker.io pulls it in too).
	echo runc
	# Image pushes are tested against a private registry on loopback (scripts/lib/registry.sh).
	echo docker-registry
	# The dynamically linked `busybox` package also ships /usr/bin/busybox, but test
	# images copy it into FROM scratch, where only the static build runs.
	echo busybox-static
	# Extended attributes on test contexts are set and read with setfattr/getfattr (Node has no call).
	echo attr
	# Only to validate docker-compose.yml in the tests: no engine runs it on these machines.
	echo docker-compose
	# The dashboard's end-to-end tests drive Debian's headless Chromium through playwright-core.
	echo chromium
	# deploy/kubernetes is rendered with `kubectl kustomize` (kustomize v5 built in; Debian's
	# older kubernetes-client package has a kustomize too old for components).
	echo kubectl
}

# Succeeds when an apt package's binaries are in place.
_kiln_apt_installed() {
	case $1 in
	docker.io) [[ -x /usr/sbin/dockerd && -x /usr/bin/docker && -x /usr/bin/containerd ]] ;;
	runc) [[ -x /usr/sbin/runc ]] ;;
	docker-registry) [[ -x /usr/bin/docker-registry ]] ;;
	attr) [[ -x /usr/bin/setfattr && -x /usr/bin/getfattr ]] ;;
	busybox-static) dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' ;;
	redis-server) [[ -x /usr/bin/redis-server ]] ;;
	postgresql) compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null ;;
	docker-compose) [[ -x /usr/bin/docker-compose ]] ;;
	# Webhook tests serve real repositories with git daemon / git http-backend.
	git) [[ -x /usr/bin/git && -x /usr/lib/git-core/git-http-backend ]] ;;
	chromium) [[ -x /usr/bin/chromium ]] ;;
	kubectl) [[ -x /usr/bin/kubectl ]] ;;
	*) return 1 ;;
	esac
}

# The `npm ci` flags of a purpose: the root package.json keeps what the service builds and runs
# with in `dependencies` (typescript, turbo and prisma included, since `npm start` builds) and
# what only tests, lint and benchmarks use in `devDependencies`.
kiln_npm_ci_flags() {
	[[ $1 == test ]] || echo --omit=dev
}

kiln_ensure_apt_packages() {
	local purpose=${1:-test} pkg
	local -a missing=()
	while read -r pkg; do
		_kiln_apt_installed "$pkg" || missing+=("$pkg")
	done < <(kiln_apt_packages "$purpose")
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

# npm ci wipes node_modules, so the stamp inside it also disappears when the install is
# interrupted. The stamp names the purpose installed: a `test` install serves `run` too, a `run`
# one lacks the test packages. Without a stamp, npm's own node_modules/.package-lock.json stands
# in for a full install (how node_modules looked before there were purposes).
kiln_ensure_node_modules() {
	local root=$1 purpose=${2:-test}
	local stamp="$root/node_modules/.kiln-npm-ci.stamp" ref installed=test
	ref=$stamp
	if [[ -e $stamp ]]; then
		installed=$(<"$stamp")
	else
		ref="$root/node_modules/.package-lock.json"
	fi
	if [[ -e $ref && ! $root/package-lock.json -nt $ref && ($installed == test || $purpose == run) ]]; then
		return 0
	fi
	local -a flags
	mapfile -t flags < <(kiln_npm_ci_flags "$purpose")
	_kiln_deps_log "running npm ci ${flags[*]}"
	(cd "$root" && npm ci --no-audit --no-fund --loglevel=error "${flags[@]}" >&2)
	echo "$purpose" >"$stamp"
}

kiln_ensure_deps() {
	local root purpose=${1:-test}
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	kiln_ensure_apt_packages "$purpose"
	kiln_ensure_node_modules "$root" "$purpose"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	if [[ ${1:-} == --list ]]; then
		[[ ${2:-} == run || ${2:-} == test ]] || { _kiln_deps_log "usage: $0 --list run|test"; exit 2; }
		kiln_apt_packages "$2" | sed 's/^/apt /'
		echo "npm ci" $(kiln_npm_ci_flags "$2")
		exit 0
	fi
	kiln_ensure_deps "${1:-test}"
fi
