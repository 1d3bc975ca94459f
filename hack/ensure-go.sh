#!/usr/bin/env bash
# hack/ensure-go.sh: print the path of a `go` binary at least as new as the
# `go` line of go.mod, fetching the official toolchain if there is none.
#
# Looks, in order, at:
#   1. `go` on PATH
#   2. /usr/local/go/bin/go
#   3. a toolchain cached earlier in ${BERTH_TOOLS:-$HOME/.cache/berth/tools}/go-<ver>
#   4. the official toolchain from the Go module proxy (module golang.org/toolchain),
#      newest patch release of go.mod's major.minor, unpacked into that cache.
#
# Only the path goes to stdout; everything else goes to stderr.
# Debian 12's own golang (1.19) is too old, so on a fresh machine step 4 runs.
set -euo pipefail

# Used when the proxy's version list can't be read. Must exist on the proxy.
PINNED_GO=1.26.8

log() { printf 'ensure-go: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
tools=${BERTH_TOOLS:-$HOME/.cache/berth/tools}

want=$(awk '$1 == "go" { print $2; exit }' "$repo_root/go.mod")
[[ $want =~ ^([0-9]+)\.([0-9]+)(\.([0-9]+))?$ ]] ||
	die "cannot parse the 'go' line of $repo_root/go.mod (got '$want')"
want_major=${BASH_REMATCH[1]} want_minor=${BASH_REMATCH[2]} want_patch=${BASH_REMATCH[4]:-0}

# norm VERSION: print "MAJOR MINOR PATCH" for 1.26, 1.26.8, go1.26.8, go1.26rc1
# (a pre-release sorts below the .0 release: patch -1). Fails if unparsable.
norm() {
	[[ $1 =~ ^(go)?([0-9]+)\.([0-9]+)(\.([0-9]+))?([a-z]+[0-9]*)? ]] || return 1
	local patch=${BASH_REMATCH[5]:-0}
	[[ -n ${BASH_REMATCH[6]} && -z ${BASH_REMATCH[5]} ]] && patch=-1
	echo "${BASH_REMATCH[2]} ${BASH_REMATCH[3]} $patch"
}

# new_enough VERSION: is VERSION >= go.mod's version?
new_enough() {
	local a
	a=$(norm "$1") || return 1
	read -r -a a <<<"$a"
	((a[0] != want_major)) && return $((a[0] < want_major))
	((a[1] != want_minor)) && return $((a[1] < want_minor))
	((a[2] >= want_patch))
}

# version_of GO: print the version of a go binary, e.g. "go1.26.8". Run from /
# with GOTOOLCHAIN=local so that a go >= 1.21 reports itself instead of
# switching to the toolchain go.mod asks for.
version_of() {
	local out
	out=$(cd / && GOTOOLCHAIN=local GOFLAGS='' "$1" version 2>/dev/null) || return 1
	[[ $out =~ (go[0-9]+\.[0-9]+[^ ]*) ]] || return 1
	echo "${BASH_REMATCH[1]}"
}

# try GO: print GO and exit if it runs and is new enough.
try() {
	local v
	[[ -x $1 ]] || return 0
	if v=$(version_of "$1") && new_enough "$v"; then
		echo "$1"
		exit 0
	fi
	log "skipping $1 (${v:-unusable}; go.mod needs go >= $want)"
}

# try_cache: the newest cached toolchain, if any is new enough.
try_cache() {
	local dir
	[[ -d $tools ]] || return 0
	while read -r dir; do
		try "$tools/$dir/bin/go"
	done < <(find "$tools" -mindepth 1 -maxdepth 1 -name 'go-*' -printf '%f\n' | sort -rV)
}

if gobin=$(command -v go 2>/dev/null); then try "$gobin"; fi
try /usr/local/go/bin/go
try_cache

# --- Nothing usable: fetch golang.org/toolchain from the module proxy. ---

case $(uname -m) in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) die "no Go toolchain download known for machine type $(uname -m)" ;;
esac

# Tools to fetch and unpack: curl, unzip, and CA certificates for https.
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v unzip >/dev/null || missing+=(unzip)
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if ((${#missing[@]})); then
	[[ $(id -u) -eq 0 ]] || die "need ${missing[*]} to download Go; install them or run as root"
	command -v apt-get >/dev/null || die "need ${missing[*]} to download Go, and apt-get is not here"
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# The proxy: the first http(s) entry of GOPROXY (from any go at all, even an
# old one, else the environment), else the public proxy.
goproxy=${GOPROXY:-}
if gobin=$(command -v go 2>/dev/null); then
	goproxy=$(cd / && GOTOOLCHAIN=local "$gobin" env GOPROXY 2>/dev/null) || goproxy=${GOPROXY:-}
fi
proxy=https://proxy.golang.org
for entry in ${goproxy//[,|]/ }; do
	if [[ $entry == http://* || $entry == https://* ]]; then
		proxy=${entry%/}
		break
	fi
done
curl_get() { curl -fsSL --retry 3 --connect-timeout 20 "$@"; }

# The newest release go<major>.<minor>.N for this arch that is new enough.
series=$want_major.$want_minor
ver=
if list=$(curl_get "$proxy/golang.org/toolchain/@v/list"); then
	ver=$(grep -E "^v0\.0\.1-go${series//./\\.}(\.[0-9]+)?\.linux-$arch\$" <<<"$list" |
		sed -E "s/^v0\.0\.1-go(.*)\.linux-$arch\$/\1/" | sort -rV |
		while read -r v; do if new_enough "$v"; then echo "$v" && break; fi; done) || true
else
	log "could not list toolchains at $proxy"
fi
if [[ -z $ver ]]; then
	ver=$PINNED_GO
	new_enough "$ver" || ver=$series.$want_patch
	log "falling back to go$ver"
fi

mod=golang.org/toolchain
modver=v0.0.1-go$ver.linux-$arch
dest=$tools/go-$ver

mkdir -p "$tools"
exec 9>"$tools/.lock"
flock 9
try "$dest/bin/go" # another run may have fetched it while we waited

tmp=$(mktemp -d "$tools/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "downloading go$ver for linux/$arch from $proxy (about 70 MB)"
curl_get -o "$tmp/go.zip" "$proxy/$mod/@v/$modver.zip" ||
	die "download of $proxy/$mod/@v/$modver.zip failed"
unzip -q "$tmp/go.zip" -d "$tmp/x"
rm "$tmp/go.zip"
src=$tmp/x/$mod@$modver
[[ -f $src/bin/go ]] || die "the zip from $proxy holds no $mod@$modver/bin/go"

# Check the unpacked files against the checksum database (as served through
# the proxy): h1: is base64(sha256 of the sorted "sha256  name" lines of every
# file in the module zip), Go's dirhash.Hash1.
if sumline=$(curl_get "$proxy/sumdb/sum.golang.org/lookup/$mod@$modver" 2>/dev/null |
	grep -F "$mod $modver h1:"); then
	want_h1=${sumline##* }
	got_hex=$(cd "$tmp/x" && find "$mod@$modver" -type f -print0 | LC_ALL=C sort -z |
		xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
	got_bin=
	for ((i = 0; i < ${#got_hex}; i += 2)); do got_bin+="\\x${got_hex:i:2}"; done
	got_h1=h1:$(printf '%b' "$got_bin" | base64)
	[[ $got_h1 == "$want_h1" ]] ||
		die "checksum mismatch for $mod@$modver: got $got_h1, checksum database says $want_h1"
	log "checksum ok ($got_h1)"
else
	log "warning: could not look up $mod@$modver in the checksum database; not verified"
fi

# Module zips carry no file modes.
chmod +x "$src"/bin/* "$src"/pkg/tool/*/*
rm -rf "$dest"
mv "$src" "$dest"

v=$(version_of "$dest/bin/go") || die "$dest/bin/go does not run"
log "installed $v in $dest"
echo "$dest/bin/go"
