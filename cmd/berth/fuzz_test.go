package main

import (
	"math"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/netplug"
)

// FuzzParseBytes checks the sizes of --memory and --memory-swap: a size
// accepted is a byte count, never negative but for "-1", never 0 but for a
// zero size, and the same as its digits with a suffix stands for.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{
		"", "0", "-1", "512", "64k", "64m", "1g", "1G", "1gb", "1.5k", "0.5", "0.5b", "-0", "-1k", "-2",
		"inf", "+Inf", "NaN", "1e400", "9e18", "9.3e18", "8e9g", "0x1p63", "0x10", "1_000", "1e-9g",
		"k", "b", "kb", "1bb", " 1", "1 ", "\u0661", "9223372036854775807", "9223372036854775808",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBytes(s)
		if err != nil {
			return
		}
		switch {
		case n == -1 && s != "-1":
			t.Fatalf("parseBytes(%q) = -1, which means no limit", s)
		case n < -1:
			t.Fatalf("parseBytes(%q) = %d", s, n)
		case n == 0 && s != "":
			num := strings.TrimRight(strings.ToLower(s), "kmgtb")
			if v, err := strconv.ParseFloat(num, 64); err != nil || v != 0 {
				t.Fatalf("parseBytes(%q) = 0, which means no limit", s)
			}
		}
		if n >= 0 {
			if again, err := parseBytes(strconv.FormatInt(n, 10)); err != nil || again != n {
				t.Fatalf("parseBytes(%q) = %d, but %d reads as %d, %v", s, n, n, again, err)
			}
		}
		// Whole numbers with a suffix are exact.
		if d, err := strconv.ParseInt(s, 10, 64); err == nil && d >= 0 && d < 1<<30 {
			for suffix, mult := range map[string]int64{"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40} {
				if d >= (1<<53)/mult { // beyond float64's exact integers
					continue
				}
				if got, err := parseBytes(s + suffix); err != nil || got != d*mult {
					t.Errorf("parseBytes(%q) = %d, %v; want %d", s+suffix, got, err, d*mult)
				}
			}
		}
	})
}

// FuzzCPUQuota checks --cpus: a value accepted gives no limit for 0 and
// otherwise a quota the kernel takes (at least 1ms) that is the share of
// the period asked for; never a quota that would read as no limit.
func FuzzCPUQuota(f *testing.F) {
	for _, c := range []float64{0, 0.5, 1, 1.5, 2, 0.01, 0.009, 1e-12, -0.0, -1, 1e300, math.Inf(1), math.NaN(), math.MaxFloat64, math.SmallestNonzeroFloat64, 92233720368} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, cpus float64) {
		q, err := cpuQuota(cpus)
		if err != nil {
			return
		}
		if cpus == 0 {
			if q != 0 {
				t.Fatalf("cpuQuota(0) = %v, want no limit", q)
			}
			return
		}
		if q < time.Millisecond || q > time.Duration(runtime.NumCPU())*cpuPeriod {
			t.Fatalf("cpuQuota(%v) = %v", cpus, q)
		}
		if want := cpus * float64(cpuPeriod); math.Abs(float64(q)-want) > 1 {
			t.Fatalf("cpuQuota(%v) = %v, want %v", cpus, q, time.Duration(want))
		}
	})
}

// FuzzParsePortMapping checks -p: a mapping accepted names a container
// port, tcp or udp, and an IPv4 host address or none, and reads back the
// same from its String.
func FuzzParsePortMapping(f *testing.F) {
	for _, s := range []string{
		"80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", "0.0.0.0:80:80/udp", "53/UDP", "[::ffff:127.0.0.1]:80:80",
		"[::1]:80:80", "[]:80", "[1.2.3.4]:80", "::80", ":80", "80:", "0", "65535:65535", "65536", "-1", "+80", "080",
		"80/sctp", "80/", "/tcp", "a:b:c:d", "1.2.3.4:5:6:7", "127.0.0.1%lo:80:80", "1.2.3.4:80:80/tcp/udp",
		"\u0668\u0660", "[", "]:", "[1.2.3.4:80:80", "01.2.3.4:80:80", "255.255.255.255:1:1", "1.2.3.4 :80:80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := netplug.ParsePortMapping(s)
		if err != nil {
			return
		}
		if p.ContainerPort == 0 || (p.Protocol != "tcp" && p.Protocol != "udp") {
			t.Fatalf("ParsePortMapping(%q) = %+v", s, p)
		}
		if p.HostIP != "" {
			a, err := netip.ParseAddr(p.HostIP)
			if err != nil || !a.Is4() || a.IsUnspecified() || a.String() != p.HostIP {
				t.Fatalf("ParsePortMapping(%q) gave host address %q", s, p.HostIP)
			}
		}
		again, err := netplug.ParsePortMapping(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePortMapping(%q) = %+v, but its String %q reads as %+v, %v", s, p, p.String(), again, err)
		}
	})
}

// FuzzParseIDMaps checks --userns: every range accepted is non-empty and
// fits in 32-bit ids on both sides, as the kernel requires.
func FuzzParseIDMaps(f *testing.F) {
	for _, s := range []string{
		"0:100000:65536", "0:1000:1,1:100000:65535", "", ",", "0:0:0", "0:4294967295:2", "4294967295:0:1",
		"0:0:4294967296", "0:0:4294967295", "1:0:4294967294", "-1:0:1", "0:0", "0:0:1:1", "0:100000:65536,", "a:b:c", "0x10:0:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		maps, err := parseIDMaps(s)
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.Size == 0 || uint64(m.ContainerID)+uint64(m.Size) >= 1<<32 || uint64(m.HostID)+uint64(m.Size) >= 1<<32 {
				t.Fatalf("parseIDMaps(%q) gave %+v", s, m)
			}
		}
	})
}
