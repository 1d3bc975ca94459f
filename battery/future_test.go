package battery

import "github.com/berth-dev/berth/sandbox"

// This file holds the battery's only uses of API that the fixes for issue
// 10 add, so that wiring them in touches one place.

// setDiskQuota caps the sandbox's writable layer at bytes
// (Options.DiskQuota, `berth run --disk`).
func setDiskQuota(o *sandbox.Options, bytes int64) {
	o.DiskQuota = bytes
}

// passDevice gives the sandbox the host device at path
// (Options.Devices, `berth run --device`) and reports whether it could:
// Options has no such field yet, and the case that needs it skips.
func passDevice(o *sandbox.Options, path string) bool {
	_, _ = o, path
	return false
}
