#!/usr/bin/env bash
# hack/build-cni.sh [DIR]: build the CNI plugins netplug uses into DIR
# (default ${BERTH_CNI_DIR:-/usr/local/lib/berth/cni}), at the version of
# github.com/containernetworking/plugins that go.mod pins (its `tool` lines
# keep the requirement, so `go mod tidy` does not drop it).
#
# netplug looks up plugins in that directory only, never in /opt/cni/bin or
# /usr/lib/cni, so a distribution's (older, differently configured) plugins
# can never be picked up by mistake.
#
# DIR/VERSION records the version built; when it matches go.mod and every
# plugin is there, nothing is rebuilt. The binaries are built into a
# temporary directory beside DIR and moved in one by one, so a sandbox
# starting meanwhile finds the old plugin or the new one, never half of one.
# Set GO to choose the toolchain (default: hack/ensure-go.sh).
set -euo pipefail

log() { printf 'build-cni: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
GO=${GO:-$(hack/ensure-go.sh)}

module=github.com/containernetworking/plugins
# Keep in step with netplug's pluginNames and go.mod's tool lines.
plugins=(
	plugins/main/bridge
	plugins/main/loopback
	plugins/ipam/host-local
	plugins/meta/portmap
	plugins/meta/firewall
	plugins/meta/tuning
)

dir=${1:-${BERTH_CNI_DIR:-/usr/local/lib/berth/cni}}
version=$("$GO" list -m -f '{{.Version}}' "$module") ||
	die "go.mod does not require $module (go get -tool $module/plugins/main/bridge@VERSION)"

up_to_date() {
	[[ -f $dir/VERSION && $(<"$dir/VERSION") == "$version" ]] || return 1
	local p
	for p in "${plugins[@]}"; do
		[[ -x $dir/${p##*/} ]] || return 1
	done
}
if up_to_date; then
	log "$dir has $module $version"
	exit 0
fi

log "building $module $version into $dir"
"$GO" mod download "$module"
mkdir -p "$dir"
tmp=$(mktemp -d "$(dirname "$dir")/.build-cni.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

pkgs=()
for p in "${plugins[@]}"; do pkgs+=("$module/$p"); done
# Static, stripped, reproducible: the plugins run as root on every attach.
CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false \
	-ldflags "-s -w -X $module/pkg/utils/buildversion.BuildVersion=$version" \
	-o "$tmp/" "${pkgs[@]}"

for p in "${plugins[@]}"; do
	name=${p##*/}
	mv -f "$tmp/$name" "$dir/$name"
done
printf '%s\n' "$version" >"$tmp/VERSION"
mv -f "$tmp/VERSION" "$dir/VERSION"
log "built ${#plugins[@]} plugins in $dir"
