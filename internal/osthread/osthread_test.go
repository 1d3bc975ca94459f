package osthread

import (
	"bytes"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// What fn changes about its thread (here: a UTS namespace of its own,
// with another host name) never reaches a goroutine run afterwards: the
// thread is thrown away with fn.
func TestGoThreadIsThrownAway(t *testing.T) {
	const name = "berth-osthread-test"
	for i := 0; i < 20; i++ {
		errc := make(chan error, 1)
		Go(func() {
			if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
				errc <- err
				return
			}
			errc <- unix.Sethostname([]byte(name))
		})
		if err := <-errc; err != nil {
			t.Skipf("cannot make a UTS namespace: %v", err)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Go(func() {
			var u unix.Utsname
			unix.Uname(&u)
			if bytes.HasPrefix(u.Nodename[:], []byte(name)) {
				t.Error("a later goroutine ran on a thread Go had given to fn")
			}
		})
	}
	wg.Wait()
}
