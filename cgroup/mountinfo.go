//go:build linux

package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/mountinfo"
)

// layout is where the hierarchies are mounted.
type layout struct {
	unified string            // cgroup2 mount point, or ""
	v1      map[string]string // v1 controller → mount point
}

func readLayout(mountinfo string) (layout, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return layout{}, fmt.Errorf("cgroup: %w", err)
	}
	defer f.Close()
	l, err := parseLayout(f)
	if err != nil {
		return layout{}, fmt.Errorf("cgroup: %s: %w", mountinfo, err)
	}
	return l, nil
}

// parseLayout reads mountinfo(5) lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// A hierarchy can be mounted more than once (a test may mount cgroup2 on a
// temporary directory); the mount under /sys/fs/cgroup wins, then the
// first one listed.
func parseLayout(r io.Reader) (layout, error) {
	l := layout{v1: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+4 {
			return layout{}, fmt.Errorf("malformed line %q", sc.Text())
		}
		point := mountinfo.Unescape(fields[4])
		switch fields[sep+1] {
		case "cgroup2":
			if preferMount(point, l.unified) {
				l.unified = point
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				if slices.Contains(v1Controllers, opt) && preferMount(point, l.v1[opt]) {
					l.v1[opt] = point
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return layout{}, err
	}
	return l, nil
}

func preferMount(cand, cur string) bool {
	return cur == "" || mountRank(cand) < mountRank(cur)
}

func mountRank(p string) int {
	switch {
	case p == "/sys/fs/cgroup":
		return 0
	case p == "/sys/fs/cgroup/unified":
		return 1
	case strings.HasPrefix(p, "/sys/fs/cgroup/"):
		return 2
	}
	return 3
}
