package main

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
)

// defaultRoot is where the tmpfses are mounted unless -root or the
// environment says otherwise: /run is a tmpfs itself, so a reboot, which
// loses the rootfses anyway, leaves no stale directories behind. It is
// not under /run/berth, which is berth's own and which berth refuses as
// any plugin's root. It is a
// variable so that a packager (or a test) can build the plugin for
// another root: go build -ldflags "-X main.defaultRoot=/srv/tmpfs-roots".
var defaultRoot = "/run/berth-tmpfs-storage"

// Bounds on a rootfs's size. Below minSize overlayfs and a shell barely
// fit; maxSize only catches typos (a tmpfs's size is a cap, not an
// allocation, and the pages written are charged to the writer's memory
// cgroup, so the sandbox's memory limit bounds them too).
const (
	minSize   = 1 << 20
	maxSize   = 1 << 50
	minInodes = 64
	maxInodes = math.MaxUint32
)

// config is the plugin's settings, from its flags.
type config struct {
	root   string
	size   int64 // default bytes per rootfs
	inodes int64 // default files per rootfs; 0: one per 4 KiB of size
	swap   bool  // mount without noswap
}

func parseConfig(root, size, inodes string, swap bool) (config, error) {
	cfg := config{root: root, swap: swap}
	if !filepath.IsAbs(root) || filepath.Clean(root) != root || root == "/" {
		return config{}, fmt.Errorf("-root %q: not an absolute, clean directory other than /", root)
	}
	if strings.ContainsAny(root, ",:\\") {
		// The root ends up in overlayfs's options, where these separate.
		return config{}, fmt.Errorf("-root %q: contains a comma, colon or backslash", root)
	}
	var err error
	if cfg.size, err = parseSize(size, minSize, maxSize); err != nil {
		return config{}, fmt.Errorf("-size: %w", err)
	}
	if inodes != "" {
		if cfg.inodes, err = parseSize(inodes, minInodes, maxInodes); err != nil {
			return config{}, fmt.Errorf("-inodes: %w", err)
		}
	}
	return cfg, nil
}

// parseSize reads a count like mount(8)'s tmpfs options do: a decimal
// number with an optional k, m or g suffix (binary multiples), and checks
// that it is within [lo, hi].
func parseSize(s string, lo, hi int64) (int64, error) {
	num, mult := s, int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			num = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a size (a number with an optional k, m or g suffix)", s)
	}
	if v > hi/mult {
		return 0, fmt.Errorf("%q is more than the largest, %d", s, hi)
	}
	v *= mult
	if v < lo {
		return 0, fmt.Errorf("%q is less than the smallest, %d", s, lo)
	}
	return v, nil
}

// limits are one rootfs's tmpfs size and inode limit.
type limits struct {
	size, inodes int64
}

// limitsFor works out a rootfs's limits: the request's disk quota first
// (berth sends one only because the plugin enforces quotas), then the
// host's settings in the request's options, then the flags.
func (c config) limitsFor(quota, inodes int64, opts map[string]string) (limits, error) {
	l := limits{size: c.size, inodes: c.inodes}
	var err error
	switch {
	case quota < 0:
		return limits{}, errors.New("negative disk quota")
	case quota > 0:
		if quota < minSize || quota > maxSize {
			return limits{}, fmt.Errorf("disk quota %d is outside [%d, %d]", quota, minSize, int64(maxSize))
		}
		l.size = quota
	case opts["size"] != "":
		if l.size, err = parseSize(opts["size"], minSize, maxSize); err != nil {
			return limits{}, fmt.Errorf("option size: %w", err)
		}
	}
	switch {
	case inodes < 0:
		return limits{}, errors.New("negative inode limit")
	case inodes > 0:
		if inodes < minInodes || inodes > maxInodes {
			return limits{}, fmt.Errorf("inode limit %d is outside [%d, %d]", inodes, minInodes, int64(maxInodes))
		}
		l.inodes = inodes
	case opts["inodes"] != "":
		if l.inodes, err = parseSize(opts["inodes"], minInodes, maxInodes); err != nil {
			return limits{}, fmt.Errorf("option inodes: %w", err)
		}
	}
	if l.inodes == 0 {
		l.inodes = max(l.size/4096, minInodes)
	}
	return l, nil
}
