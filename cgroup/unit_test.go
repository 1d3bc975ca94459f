//go:build linux

package cgroup

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const hybridMountinfo = `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 60 0:38 / /tmp/berth-cgroup2-1 rw,relatime - cgroup2 none rw
`

const v2Mountinfo = `25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
90 60 0:27 / /tmp/my\040cgroup rw,relatime - cgroup2 none rw
26 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

// systemd's classic v1 layout: cpu and cpuacct co-mounted, with symlinks
// /sys/fs/cgroup/cpu and /sys/fs/cgroup/cpuacct that mountinfo never shows.
const comountMountinfo = `31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
35 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,net_cls,net_prio
37 31 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,memory
`

func TestParseLayout(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo string
		want            layout
	}{
		{"hybrid", hybridMountinfo, layout{
			unified: "/sys/fs/cgroup/unified",
			v1: map[string]string{
				"blkio": "/sys/fs/cgroup/blkio", "cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
				"cpuset": "/sys/fs/cgroup/cpuset", "devices": "/sys/fs/cgroup/devices", "freezer": "/sys/fs/cgroup/freezer",
				"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
			},
		}},
		{"v2", v2Mountinfo, layout{unified: "/sys/fs/cgroup", v1: map[string]string{}}},
		{"co-mounted v1", comountMountinfo, layout{v1: map[string]string{
			"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory",
		}}},
		{"escaped", "1 0 0:27 / /tmp/my\\040cgroup rw - cgroup2 none rw\n", layout{unified: "/tmp/my cgroup", v1: map[string]string{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLayout(strings.NewReader(tc.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			if got.unified != tc.want.unified {
				t.Errorf("unified = %q, want %q", got.unified, tc.want.unified)
			}
			if len(got.v1) != len(tc.want.v1) {
				t.Errorf("v1 = %v, want %v", got.v1, tc.want.v1)
			}
			for ctrl, mnt := range tc.want.v1 {
				if got.v1[ctrl] != mnt {
					t.Errorf("v1[%s] = %q, want %q", ctrl, got.v1[ctrl], mnt)
				}
			}
		})
	}
	if _, err := parseLayout(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("malformed line accepted")
	}
}

func TestValidName(t *testing.T) {
	for _, name := range []string{"a", "sandbox-1", "A.b_c-9", "0", strings.Repeat("x", 255)} {
		if !validName(name) {
			t.Errorf("validName(%q) = false", name)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "/a", "-a", "_a", ".a", "a b", "a\x00", "é", strings.Repeat("x", 256)} {
		if validName(name) {
			t.Errorf("validName(%q) = true", name)
		}
	}
}

// A Manager that touches nothing: names are checked before any file is.
func TestBadNames(t *testing.T) {
	m := &Manager{parent: "berth", v1: map[string]string{}, log: slog.New(slog.DiscardHandler)}
	for _, name := range []string{"", "..", "../x", "a/b", "-x", "x y"} {
		if _, err := m.Create(name, nil); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Create(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := m.Open(name); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Open(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := NewManager(Options{V1Mounts: map[string]string{"bogus": "/x"}}); err == nil {
		t.Error("NewManager accepted an unknown v1 controller")
	}
	if _, err := NewManager(Options{Mode: V2, UnifiedMount: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not a cgroup2 mount") {
		t.Errorf("NewManager on a plain directory: %v, want 'not a cgroup2 mount'", err)
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Auto: "auto", V1: "v1", Hybrid: "hybrid", V2: "v2", 9: "Mode(9)"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(m), got, want)
		}
	}
}

func TestConversions(t *testing.T) {
	for w, want := range map[uint64]uint64{1: 2, 100: 2597, 10000: 262144} {
		if got := cpuSharesFromWeight(w); got != want {
			t.Errorf("cpuSharesFromWeight(%d) = %d, want %d", w, got, want)
		}
	}
	for w, want := range map[uint16]uint64{1: 10, 100: 19, 5000: 504, 10000: 1000} {
		if got := blkioWeightFromIOWeight(w); got != want {
			t.Errorf("blkioWeightFromIOWeight(%d) = %d, want %d", w, got, want)
		}
	}
	for w, want := range map[uint16]uint64{1: 1, 10000: 1000} {
		if got := bfqWeightFromIOWeight(w); got != want {
			t.Errorf("bfqWeightFromIOWeight(%d) = %d, want %d", w, got, want)
		}
	}
	for _, tc := range []struct {
		r    Resources
		want string
	}{
		{Resources{MemoryMax: 100, MemorySwapMax: 100}, "0"},
		{Resources{MemoryMax: 100, MemorySwapMax: 250}, "150"},
		{Resources{MemoryMax: 100, MemorySwapMax: -1}, "max"},
	} {
		if got := v2SwapMax(&tc.r); got != tc.want {
			t.Errorf("v2SwapMax(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
	for _, tc := range []struct {
		quota, period time.Duration
		current, want string
	}{
		{50 * time.Millisecond, 0, "", "50000 100000"},
		{150 * time.Millisecond, 200 * time.Millisecond, "", "150000 200000"},
		{1500 * time.Microsecond, 10 * time.Millisecond, "", "1500 10000"},
		{-1, 0, "", "max"},
		{-1, 20 * time.Millisecond, "", "max 20000"},
		{0, 20 * time.Millisecond, "50000 100000", "50000 20000"},
		{0, 20 * time.Millisecond, "max 100000", "max 20000"},
	} {
		r := Resources{CPUQuota: tc.quota, CPUPeriod: tc.period}
		if got := v2CPUMax(&r, tc.current); got != tc.want {
			t.Errorf("v2CPUMax(quota %v, period %v, current %q) = %q, want %q", tc.quota, tc.period, tc.current, got, tc.want)
		}
	}
}

func TestResourcesValidate(t *testing.T) {
	for _, r := range []Resources{
		{},
		{MemoryMax: 1 << 20, MemorySwapMax: 1 << 20},
		{MemoryMax: -1, MemorySwapMax: -1, PidsMax: -1, CPUQuota: -1},
		{MemorySwapMax: -1},
		{CPUQuota: time.Millisecond, CPUPeriod: time.Second, CPUWeight: 10000, IOWeight: 10000},
		{PidsMax: maxPids},
	} {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	for _, r := range []Resources{
		{MemoryMax: -2},
		{MemorySwapMax: 1 << 20},                     // swap without memory
		{MemoryMax: -1, MemorySwapMax: 1 << 20},      // swap over unlimited memory
		{MemoryMax: 2 << 20, MemorySwapMax: 1 << 20}, // memory+swap below memory
		{CPUQuota: time.Microsecond},
		{CPUQuota: 50 * time.Millisecond, CPUPeriod: 2 * time.Second},
		{CPUPeriod: -time.Millisecond},
		{CPUWeight: 10001},
		{PidsMax: -5},
		{PidsMax: maxPids + 1},
		{IOWeight: 10001},
	} {
		if err := r.Validate(); !errors.Is(err, ErrInvalidResources) {
			t.Errorf("%+v: %v, want ErrInvalidResources", r, err)
		}
	}
}

// fakeDir lays out files as a cgroup directory would hold them.
func fakeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func checkFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	for name, w := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if string(b) != w {
			t.Errorf("%s = %q, want %q", name, b, w)
		}
	}
}

var v2Files = map[string]string{
	"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
	"memory.max":         "max\n",
	"memory.swap.max":    "max\n",
	"cpu.max":            "max 100000\n",
	"cpu.weight":         "100\n",
	"pids.max":           "max\n",
	"io.weight":          "default 100\n",
}

// What Update writes on v2, checked on a plain directory laid out like a
// v2 cgroup: on this host no cgroup2 cgroup has the controllers.
func TestV2Writes(t *testing.T) {
	dir := fakeDir(t, v2Files)
	rec := &recorder{}
	c := &Cgroup{name: "fake", unified: dir, log: slog.New(rec)}

	err := c.Update(&Resources{
		MemoryMax: 32 << 20, MemorySwapMax: 48 << 20,
		CPUQuota: 50 * time.Millisecond, CPUPeriod: 100 * time.Millisecond,
		CPUWeight: 200, PidsMax: 20, IOWeight: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]string{
		"memory.max":      "33554432",
		"memory.swap.max": "16777216",
		"cpu.max":         "50000 100000",
		"cpu.weight":      "200",
		"pids.max":        "20",
		"io.weight":       "default 100",
	})

	// Only the period: the quota stays.
	if err := c.Update(&Resources{CPUPeriod: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]string{"cpu.max": "50000 200000", "memory.max": "33554432"})

	// -1 lifts limits.
	if err := c.Update(&Resources{MemoryMax: -1, MemorySwapMax: -1, CPUQuota: -1, PidsMax: -1}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]string{"memory.max": "max", "memory.swap.max": "max", "cpu.max": "max", "pids.max": "max"})

	// No swap: memory+swap equal to memory.
	if err := c.Update(&Resources{MemoryMax: 64 << 20, MemorySwapMax: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]string{"memory.max": "67108864", "memory.swap.max": "0"})
	if rec.has("WARN") {
		t.Errorf("unexpected warnings: %q", rec.msgs)
	}
}

func TestV2IOWeightFallback(t *testing.T) {
	files := map[string]string{"cgroup.controllers": "io\n", "io.bfq.weight": "default 100\n"}
	dir := fakeDir(t, files)
	rec := &recorder{}
	c := &Cgroup{name: "fake", unified: dir, log: slog.New(rec)}
	if err := c.Update(&Resources{IOWeight: 10000}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, dir, map[string]string{"io.bfq.weight": "1000"})

	// Neither file: skipped, with a warning, not an error.
	if err := os.Remove(filepath.Join(dir, "io.bfq.weight")); err != nil {
		t.Fatal(err)
	}
	if err := c.Update(&Resources{IOWeight: 100}); err != nil {
		t.Fatalf("IOWeight without a weight file: %v, want it skipped", err)
	}
	if !rec.has("WARN cgroup: no I/O weight file") {
		t.Errorf("no warning logged; got %q", rec.msgs)
	}
}

// A limit whose controller is not enabled fails with ErrUnsupported before
// anything is written.
func TestV2MissingController(t *testing.T) {
	files := map[string]string{"cgroup.controllers": "cpu\n", "cpu.max": "max 100000\n", "cpu.weight": "100\n"}
	dir := fakeDir(t, files)
	c := &Cgroup{name: "fake", unified: dir, log: slog.New(slog.DiscardHandler)}
	err := c.Update(&Resources{CPUWeight: 500, MemoryMax: 1 << 20})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), `"memory"`) {
		t.Fatalf("Update = %v, want ErrUnsupported naming memory", err)
	}
	checkFiles(t, dir, map[string]string{"cpu.weight": "100\n"})

	// A cgroup that is gone is ErrNotFound.
	gone := &Cgroup{name: "gone", unified: filepath.Join(dir, "gone"), log: slog.New(slog.DiscardHandler)}
	if err := gone.Update(&Resources{PidsMax: 1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update of a missing cgroup = %v, want ErrNotFound", err)
	}
}

// What Update writes on v1, with cpu and cpuacct co-mounted.
func TestV1Writes(t *testing.T) {
	mem := fakeDir(t, map[string]string{
		"memory.limit_in_bytes":       "9223372036854771712\n",
		"memory.memsw.limit_in_bytes": "9223372036854771712\n",
	})
	cpu := fakeDir(t, map[string]string{"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n", "cpu.shares": "1024\n"})
	pids := fakeDir(t, map[string]string{"pids.max": "max\n"})
	blkio := fakeDir(t, map[string]string{"blkio.weight": "500\n"})
	c := &Cgroup{name: "fake", log: slog.New(slog.DiscardHandler), v1: map[string]string{
		"memory": mem, "cpu": cpu, "cpuacct": cpu, "pids": pids, "blkio": blkio,
	}}
	err := c.Update(&Resources{
		MemoryMax: 32 << 20, MemorySwapMax: 32 << 20,
		CPUQuota: 50 * time.Millisecond, CPUWeight: 100, PidsMax: 20, IOWeight: 10000,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, mem, map[string]string{"memory.limit_in_bytes": "33554432", "memory.memsw.limit_in_bytes": "33554432"})
	checkFiles(t, cpu, map[string]string{"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000", "cpu.shares": "2597"})
	checkFiles(t, pids, map[string]string{"pids.max": "20"})
	checkFiles(t, blkio, map[string]string{"blkio.weight": "1000"})

	if err := c.Update(&Resources{MemoryMax: -1, MemorySwapMax: -1, CPUQuota: -1, PidsMax: -1}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, mem, map[string]string{"memory.limit_in_bytes": "-1", "memory.memsw.limit_in_bytes": "-1"})
	checkFiles(t, cpu, map[string]string{"cpu.cfs_quota_us": "-1"})
	checkFiles(t, pids, map[string]string{"pids.max": "max"})

	c.v1["pids"] = ""
	if err := c.Update(&Resources{PidsMax: 5}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("pids limit without a pids hierarchy: %v, want ErrUnsupported", err)
	}
}

// On v1 the limit that makes room for the other is written first.
func TestV1MemoryOrder(t *testing.T) {
	mem := fakeDir(t, map[string]string{"memory.limit_in_bytes": "33554432\n", "memory.memsw.limit_in_bytes": "33554432\n"})
	c := &Cgroup{name: "fake", log: slog.New(slog.DiscardHandler), v1: map[string]string{"memory": mem}}
	order := func(r Resources) string {
		plan, err := c.planV1(&r)
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		for _, s := range plan {
			files = append(files, filepath.Base(s.file))
		}
		return strings.Join(files, " ")
	}
	const memFirst = "memory.limit_in_bytes memory.memsw.limit_in_bytes"
	const swapFirst = "memory.memsw.limit_in_bytes memory.limit_in_bytes"
	for _, tc := range []struct {
		r    Resources
		want string
	}{
		{Resources{MemoryMax: 64 << 20, MemorySwapMax: 64 << 20}, swapFirst}, // growing
		{Resources{MemoryMax: 16 << 20, MemorySwapMax: 16 << 20}, memFirst},  // shrinking
		{Resources{MemoryMax: 16 << 20, MemorySwapMax: -1}, swapFirst},
		{Resources{MemoryMax: -1, MemorySwapMax: -1}, swapFirst},
		{Resources{MemoryMax: 16 << 20}, "memory.limit_in_bytes"},
	} {
		if got := order(tc.r); got != tc.want {
			t.Errorf("MemoryMax %d, MemorySwapMax %d: writes %s, want %s", tc.r.MemoryMax, tc.r.MemorySwapMax, got, tc.want)
		}
	}

	// Without swap accounting, only "unlimited swap" can be honoured.
	if err := os.Remove(filepath.Join(mem, "memory.memsw.limit_in_bytes")); err != nil {
		t.Fatal(err)
	}
	if got := order(Resources{MemoryMax: 16 << 20, MemorySwapMax: -1}); got != "memory.limit_in_bytes" {
		t.Errorf("without memsw, swap -1: writes %s", got)
	}
	if _, err := c.planV1(&Resources{MemoryMax: 16 << 20, MemorySwapMax: 16 << 20}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("without memsw, swap limit: %v, want ErrUnsupported", err)
	}
}

func TestIsUnder(t *testing.T) {
	for path, want := range map[string]bool{
		"/berth/x":          true,
		"/ns/berth/x":       true,
		"/berth/x/sub":      true,
		"/berth/xy":         false,
		"/otherberth/x":     false,
		"/berth":            false,
		"/process_api/abcd": false,
	} {
		if got := isUnder(path, "/berth/x"); got != want {
			t.Errorf("isUnder(%q) = %v, want %v", path, got, want)
		}
	}
}
