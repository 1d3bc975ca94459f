package safetree

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/osthread"
)

// capSysResource is CAP_SYS_RESOURCE's number.
const capSysResource = 24

// Creds are what a thread that writes into a sandbox's tree acts as.
type Creds struct {
	// FSUID and FSGID, if not -1, are the ids files are created with
	// (setfsuid, setfsgid): a sandbox in a user namespace has
	// filesystems (its tmpfs mounts) on which the host's root is no one
	// and cannot create files, and on the others a file it creates would
	// show as no one inside.
	FSUID, FSGID int
}

// NoCreds leaves the thread's ids as they are.
var NoCreds = Creds{FSUID: -1, FSGID: -1}

// OnThread calls fn on an OS thread of its own that has dropped
// CAP_SYS_RESOURCE, so that what fn writes counts against quotas (ext4
// lets that capability exceed them), and that acts as c says; the thread
// keeps every other capability it had. The thread is never unlocked, so
// the runtime ends it when fn returns instead of letting other goroutines
// run with its credentials. fn must not start goroutines that write.
func OnThread(c Creds, fn func() error) error {
	errc := make(chan error, 1)
	osthread.Go(func() {
		if err := c.apply(); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	})
	return <-errc
}

func (c Creds) apply() error {
	if c.FSGID != -1 {
		unix.Setfsgid(c.FSGID)
		if got, _ := unix.SetfsgidRetGid(-1); got != c.FSGID {
			return fmt.Errorf("setfsgid %d: still %d", c.FSGID, got)
		}
	}
	if c.FSUID != -1 {
		unix.Setfsuid(c.FSUID)
		if got, _ := unix.SetfsuidRetUid(-1); got != c.FSUID {
			return fmt.Errorf("setfsuid %d: still %d", c.FSUID, got)
		}
	}
	// A change of fsuid away from 0 clears the filesystem capabilities
	// from the effective set; they are raised again from the permitted
	// set, which it leaves alone.
	return setEffective(c.FSUID != -1)
}

// DropResourceCap clears CAP_SYS_RESOURCE from the effective capabilities
// of the calling thread, which must be locked to its goroutine and never
// unlocked. Capabilities belong to each thread: the rest of the process
// keeps its own.
func DropResourceCap() error { return setEffective(false) }

// setEffective clears CAP_SYS_RESOURCE from the calling thread's
// effective capabilities and, with raise, makes the rest of them its
// permitted ones.
func setEffective(raise bool) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if raise {
		data[0].Effective, data[1].Effective = data[0].Permitted, data[1].Permitted
	} else if data[0].Effective&(1<<capSysResource) == 0 {
		return nil
	}
	data[0].Effective &^= 1 << capSysResource
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop CAP_SYS_RESOURCE: %w", err)
	}
	return nil
}
