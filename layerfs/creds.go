package layerfs

import "github.com/berth-dev/berth/internal/safetree"

// withoutResourceCap calls fn on an OS thread of its own that has dropped
// CAP_SYS_RESOURCE from its effective capabilities; the thread is never
// unlocked, so the runtime ends it when fn returns instead of letting other
// goroutines run with its capabilities.
//
// Prepare mounts rootfses so where the store's filesystem enforces quotas.
// overlayfs makes every change to its upper directory with the credentials
// of the task that mounted it, whoever writes through the mount, and ext4
// lets CAP_SYS_RESOURCE exceed quota limits: a sandbox writing through an
// overlay mounted with it would ignore its disk quota, and any quota an
// administrator set on the store's filesystem.
func withoutResourceCap(fn func() error) error {
	return safetree.OnThread(safetree.NoCreds, fn)
}

// dropResourceCap clears CAP_SYS_RESOURCE from the effective capabilities
// of the calling thread, which must be locked to its goroutine and never
// unlocked.
func dropResourceCap() error { return safetree.DropResourceCap() }
