package layerfs

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// capSysResource is CAP_SYS_RESOURCE's number.
const capSysResource = 24

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
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := dropResourceCap(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dropResourceCap clears CAP_SYS_RESOURCE from the effective capabilities
// of the calling thread, which must be locked to its goroutine and never
// unlocked. Capabilities belong to each thread: the rest of the process
// keeps its own.
func dropResourceCap() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if data[0].Effective&(1<<capSysResource) == 0 {
		return nil
	}
	data[0].Effective &^= 1 << capSysResource
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop CAP_SYS_RESOURCE: %w", err)
	}
	return nil
}
