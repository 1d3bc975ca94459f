package main

import "testing"

func TestParseDiskQuota(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1m": 1 << 20, "1g": 1 << 30, "1.5G": 3 << 29, "2t": 2 << 40, "4096k": 4 << 20, "1048576": 1 << 20} {
		if got, err := parseDiskQuota(in); err != nil || got != want {
			t.Errorf("parseDiskQuota(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-1", "-1g", "1k", "1023k", "abc", "1x", "inf", "nan", "1e30g", "9223372036854775807", "g"} {
		if got, err := parseDiskQuota(in); err == nil {
			t.Errorf("parseDiskQuota(%q) = %d, want an error", in, got)
		}
	}
}
