#!/usr/bin/env bash
# Private, throw-away standalone buildkitd (BuildKit's own daemon, not dockerd's embedded one).
#
#   scripts/lib/buildkitd.sh start DIR [CONFIG_TOML]   # DIR short, e.g. mktemp -d /tmp/kiln-bk-XXXX
#   scripts/lib/buildkitd.sh stop DIR
#   scripts/lib/buildkitd.sh bin                        # prints the directory holding buildkitd/buildctl
#   scripts/lib/buildkitd.sh download                   # fetches the pinned release (4. below) now
# or source it and call kiln_buildkitd_start / kiln_buildkitd_stop / kiln_buildkit_bin_dir.
#
# The daemon listens on unix://DIR/buildkitd.sock, keeps its state in DIR/root and its
# OpenTelemetry socket in DIR (without that flag every daemon shares
# /run/buildkit/otel-grpc.sock and a second one fails to start).
#
# Which binaries, first found wins:
#   1. KILN_BUILDKIT_BIN_DIR: a directory holding buildkitd and buildctl (a user's own build);
#   2. buildkitd and buildctl on PATH;
#   3. shared/buildkit/ beside the checkout (where Kiln's CI and development machines have v0.24.0);
#   4. the pinned release tarball, downloaded once into KILN_BUILDKIT_CACHE and checked
#      against its pinned sha256, or KILN_BUILDKIT_SHA256 for another version or machine
#      (needs internet, or KILN_BUILDKIT_RELEASES pointing at a mirror of the release
#      directory layout; a download that cannot be checked is refused).
KILN_BUILDKIT_VERSION=${KILN_BUILDKIT_VERSION:-v0.24.0}
: "${KILN_BUILDKIT_RELEASES:=https://github.com/moby/buildkit/releases/download}"
: "${KILN_BUILDKITD_START_TIMEOUT:=60}"
# shellcheck source=process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

_kiln_bk_log() { printf 'buildkitd.sh: %s\n' "$*" >&2; }

_kiln_bk_has_both() { [[ -x $1/buildkitd && -x $1/buildctl ]]; }

# sha256 of each pinned release tarball, by "version arch". The machines this was written on
# have no internet, so the values are not read from the release page: they are the ones
# containerd/nerdctl pinned for these archives (Dockerfile.d/SHA256SUMS.d/buildkit-v0.24.0,
# commit 3c9e07a5, which its Dockerfile checks each download against with sha256sum -c); a
# public install script pins the same linux-amd64 value. A wrong pin fails closed: the download
# is refused, never run unchecked.
_kiln_bk_pinned_sha256() {
	case "$1 $2" in
	"v0.24.0 amd64") echo af8064eca16077b4d6937745988ba2d2dfa439540874cdcd918318315f3ba1d3 ;;
	"v0.24.0 arm64") echo 38dc4433d220bb43c198df2070e49d5dde5ed44ee31fb80d6b13722eec21d4ea ;;
	*) return 1 ;;
	esac
}

_kiln_bk_arch() {
	case $(uname -m) in
	x86_64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) uname -m ;;
	esac
}

# The release tarball holds bin/buildkitd and bin/buildctl.
kiln_buildkit_download() {
	local cache=${KILN_BUILDKIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln/buildkit-$KILN_BUILDKIT_VERSION}
	local arch want
	arch=$(_kiln_bk_arch)
	local url="$KILN_BUILDKIT_RELEASES/$KILN_BUILDKIT_VERSION/buildkit-$KILN_BUILDKIT_VERSION.linux-$arch.tar.gz"
	if _kiln_bk_has_both "$cache/bin"; then
		echo "$cache/bin"
		return 0
	fi
	want=${KILN_BUILDKIT_SHA256:-$(_kiln_bk_pinned_sha256 "$KILN_BUILDKIT_VERSION" "$arch")} || {
		_kiln_bk_log "no buildkitd found (KILN_BUILDKIT_BIN_DIR, PATH, shared/buildkit beside the checkout), and no sha256 is pinned for $KILN_BUILDKIT_VERSION linux-$arch; see docs/buildkit.md, or set KILN_BUILDKIT_SHA256 to the sha256 of $url to download it"
		return 1
	}
	mkdir -p "$cache"
	local tarball="$cache/release.tar.gz"
	_kiln_bk_log "downloading $url"
	curl -fsSL --retry 3 -o "$tarball.part" "$url" || {
		rm -f "$tarball.part"
		_kiln_bk_log "download of $url failed"
		return 1
	}
	if [[ $(sha256sum "$tarball.part" | cut -d' ' -f1) != "$want" ]]; then
		rm -f "$tarball.part"
		_kiln_bk_log "sha256 of $url is not $want: not used"
		return 1
	fi
	mv "$tarball.part" "$tarball"
	tar -xzf "$tarball" -C "$cache" bin/buildkitd bin/buildctl || {
		_kiln_bk_log "$tarball has no bin/buildkitd and bin/buildctl"
		return 1
	}
	echo "$cache/bin"
}

# Prints the directory holding the buildkitd and buildctl to use.
kiln_buildkit_bin_dir() {
	local shared dir
	if [[ -n ${KILN_BUILDKIT_BIN_DIR:-} ]]; then
		_kiln_bk_has_both "$KILN_BUILDKIT_BIN_DIR" || {
			_kiln_bk_log "KILN_BUILDKIT_BIN_DIR=$KILN_BUILDKIT_BIN_DIR has no executable buildkitd and buildctl"
			return 1
		}
		echo "$KILN_BUILDKIT_BIN_DIR"
		return 0
	fi
	if dir=$(command -v buildkitd) && _kiln_bk_has_both "$(dirname "$dir")"; then
		dirname "$dir"
		return 0
	fi
	shared=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/shared/buildkit
	if _kiln_bk_has_both "$shared"; then
		echo "$shared"
		return 0
	fi
	kiln_buildkit_download
}

_kiln_bk_pid_is_ours() { kiln_pid_mentions "$1" "$2/"; }

kiln_buildkitd_answers() {
	local bin=$1 dir=$2
	[[ -S $dir/buildkitd.sock ]] &&
		timeout 5 "$bin/buildctl" --addr "unix://$dir/buildkitd.sock" debug workers >/dev/null 2>&1
}

# Usage: kiln_buildkitd_start DIR [CONFIG_TOML]. Sets REPLY to the daemon's address.
kiln_buildkitd_start() {
	local dir=${1:?usage: kiln_buildkitd_start DIR [CONFIG_TOML]} config=${2:-} bin pid
	dir=$(cd "$dir" && pwd) || return 1
	# sun_path holds 108 bytes; runc's sockets under root/ are longer than ours.
	if ((${#dir} > 60)); then
		_kiln_bk_log "directory path too long for unix sockets: $dir"
		return 1
	fi
	bin=$(kiln_buildkit_bin_dir) || return 1
	[[ -x /usr/sbin/runc || -x /usr/bin/runc ]] || { _kiln_bk_log "runc is missing (Debian package runc)"; return 1; }
	mkdir -p "$dir/root" "$dir/spawned"
	# A config file of our own keeps a host /etc/buildkit/buildkitd.toml out of the picture.
	if [[ -n $config ]]; then cp "$config" "$dir/buildkitd.toml"; else : >"$dir/buildkitd.toml"; fi
	"$bin/buildkitd" \
		--config "$dir/buildkitd.toml" \
		--root "$dir/root" \
		--addr "unix://$dir/buildkitd.sock" \
		--otel-socket-path "$dir/otel-grpc.sock" \
		--containerd-worker=false --oci-worker=true \
		</dev/null >"$dir/buildkitd.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/spawned/buildkitd"
	local deadline=$((SECONDS + KILN_BUILDKITD_START_TIMEOUT))
	until kiln_buildkitd_answers "$bin" "$dir"; do
		if ! kiln_pid_alive "$pid" || ((SECONDS >= deadline)); then
			_kiln_bk_log "buildkitd did not come up; last lines of $dir/buildkitd.log:"
			tail -n 25 "$dir/buildkitd.log" >&2
			kiln_buildkitd_stop "$dir" || true
			return 1
		fi
		sleep 0.1
	done
	REPLY=unix://$dir/buildkitd.sock
}

# Safe to call twice, or after a failed start.
kiln_buildkitd_stop() {
	local dir=${1:?usage: kiln_buildkitd_stop DIR} rc=0 pid p
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd) || return 1
	if [[ -f $dir/spawned/buildkitd ]]; then
		pid=$(<"$dir/spawned/buildkitd")
		kiln_stop_pid _kiln_bk_log "buildkitd $pid" "$pid" 20 _kiln_bk_pid_is_ours "$pid" "$dir" || rc=1
	fi
	# A RUN step's runc (and its container) can outlive a killed daemon.
	for p in $(kiln_pids_under "$dir" 'buildkitd|runc|buildkit-runc'); do
		kiln_stop_pid _kiln_bk_log "leftover $p" "$p" 5 _kiln_bk_pid_is_ours "$p" "$dir" || rc=1
	done
	kiln_unmount_below "$dir"
	return "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start)
		kiln_buildkitd_start "${2:?usage: $0 start DIR [CONFIG_TOML]}" "${3:-}"
		echo "$REPLY"
		;;
	stop) kiln_buildkitd_stop "${2:?usage: $0 stop DIR}" ;;
	bin) kiln_buildkit_bin_dir ;;
	download) kiln_buildkit_download ;;
	*)
		echo "usage: $0 start DIR [CONFIG_TOML] | stop DIR | bin | download" >&2
		exit 2
		;;
	esac
fi
