package main

import (
	"fmt"

	"github.com/berth-dev/berth/layerfs"
)

// parseDiskQuota reads --disk: a size as -m takes, of at least
// layerfs.MinDiskQuota; "" means no quota.
func parseDiskQuota(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := parseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("--disk: %w", err)
	}
	if n < layerfs.MinDiskQuota {
		return 0, fmt.Errorf("--disk %s: want a size of at least 1m", s)
	}
	return n, nil
}
