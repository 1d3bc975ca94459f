#!/usr/bin/env bash
# hack/mkdemo.sh OUT.tar.gz: build the root filesystem of the busybox:demo
# image from Debian's busybox-static, as a gzipped tar at OUT.tar.gz.
#
# The tar is reproducible (sorted names, owner 0:0, mtime 0, gzip -n), so the
# same busybox-static package always gives the same image digest. Import it
# with: bin/berth image import OUT.tar.gz --name busybox:demo
set -euo pipefail

BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { printf 'mkdemo.sh: error: %s\n' "$*" >&2; exit 1; }

if (($# != 1)) || [[ $1 != *.tar.gz ]]; then die "usage: $0 OUT.tar.gz"; fi
out=$1

[[ -x $BUSYBOX ]] ||
	die "$BUSYBOX not found: install busybox-static (hack/deps.sh demo)"
# The image has no libc, so the binary must be static (busybox-static, not busybox).
if ldd "$BUSYBOX" >/dev/null 2>&1; then
	die "$BUSYBOX is dynamically linked: install busybox-static (hack/deps.sh demo)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
mkdir "$root"

# Directories.
install -d -m 0755 "$root"/{bin,dev,etc,proc,sys,usr,var}
install -d -m 0700 "$root/root"
install -d -m 1777 "$root/tmp"
# One bin directory for every usual PATH entry, so /usr/bin/env works.
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"

# busybox and one symlink per applet.
install -m 0755 "$BUSYBOX" "$root/bin/busybox"
n=0
while read -r applet; do
	[[ -n $applet && $applet != */* && $applet != busybox ]] || continue
	ln -s busybox "$root/bin/$applet"
	n=$((n + 1))
done < <("$BUSYBOX" --list)
((n > 0)) || die "$BUSYBOX --list printed no applets"

# Users and groups.
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# Reproducible archive: names without a leading ./, in sorted order.
mkdir -p "$(dirname "$out")"
(
	cd "$root"
	export LC_ALL=C
	shopt -s dotglob
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
		--format=gnu -cf - -- * | gzip -n -9
) >"$out.tmp"
mv "$out.tmp" "$out"

version=$("$BUSYBOX" 2>&1 | head -n1 | cut -d' ' -f1-2) || true
echo "mkdemo.sh: wrote $out: $version, $n applets, sha256 $(sha256sum "$out" | cut -d' ' -f1)" >&2
