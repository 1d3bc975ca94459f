#!/usr/bin/env bash
# hack/deps.sh demo|test|bench...: install the Debian packages that a make
# target needs, only those not installed yet. Runs `apt-get update` at most
# once, and only when something is missing. Debian 12, as root.
set -euo pipefail

# --- What each target needs. Add packages here. ---
# demo: the busybox:demo image is built from busybox-static's /bin/busybox;
# berth itself is built with cgo (gcc, libc6-dev) and links libseccomp.
DEMO_PKGS=(busybox-static ca-certificates gcc libc6-dev libseccomp-dev pkg-config iptables iproute2)
# test: images (skopeo, umoci; podman, whose save formats imports are
# checked against), networking (iptables; nftables, whose nft
# command the leak audits count berth's own filters with), seccomp through cgo
# (libseccomp-dev, pkg-config, gcc, libc6-dev: gcc only recommends libc6-dev),
# and ca-certificates for fetching modules from the Go module proxy;
# docker-registry, the reference registry, which the registry tests start
# on 127.0.0.1 themselves (its system service is stopped, see below).
TEST_PKGS=(busybox-static skopeo umoci podman iptables nftables iproute2 libseccomp-dev pkg-config gcc libc6-dev ca-certificates docker-registry)
# bench: the runtimes berth is compared with.
BENCH_PKGS=(runc crun bubblewrap podman)

die() { printf 'deps.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 demo|test|bench..."; }
(($#)) || usage

wanted=()
for target in "$@"; do
	case $target in
	demo) wanted+=("${DEMO_PKGS[@]}") ;;
	test) wanted+=("${TEST_PKGS[@]}") ;;
	bench) wanted+=("${BENCH_PKGS[@]}") ;;
	*) usage ;;
	esac
done

[[ $(id -u) -eq 0 ]] ||
	die "must run as root: it installs Debian packages with apt-get (try: sudo $0 $*)"
if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
	die "apt-get and dpkg-query not found: this script expects Debian 12"
fi

installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

missing=()
for pkg in "${wanted[@]}"; do
	installed "$pkg" || [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
	echo "deps.sh: all packages for $* are installed" >&2
	exit 0
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q ||
	die "apt-get update failed"
apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" ||
	die "apt-get install ${missing[*]} failed"

# Debian starts the registry it installs as a service listening on every
# interface (:5000). The tests run their own on 127.0.0.1; one that this
# script installed is not left serving the network.
if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null &&
	[[ -d /run/systemd/system ]]; then
	systemctl disable --now docker-registry.service >&2 ||
		echo "deps.sh: could not stop the docker-registry service; stop it with: systemctl disable --now docker-registry" >&2
fi
