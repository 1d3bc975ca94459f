//go:build linux

package cgroup_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/berth-dev/berth/cgroup"
)

// exampleManager returns a Manager whose cgroups live in a parent of the
// example's own, so that the examples neither see nor touch a real
// berth's sandboxes (under the default parent, "berth"). A real program
// would call cgroup.NewManager(cgroup.Options{}). done removes the
// parent, once the example has removed its cgroups.
func exampleManager() (m *cgroup.Manager, done func()) {
	m, err := cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("berth-example-%d", os.Getpid())})
	if err != nil {
		log.Fatal(err)
	}
	return m, func() {
		if err := m.RemoveParent(); err != nil {
			log.Print(err)
		}
	}
}

// startBlocked starts sh running script once a line arrives on its
// standard input, and returns the line's writer: the caller can move the
// shell into a cgroup before anything of the script runs.
func startBlocked(script string) (*exec.Cmd, io.WriteCloser, *strings.Builder) {
	cmd := exec.Command("sh", "-c", "read go; "+script)
	var out strings.Builder
	cmd.Stdout = &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	return cmd, stdin, &out
}

// Limit a process's memory, CPU time and process count, see it in its
// cgroup, and end it with the cgroup.
func Example() {
	m, done := exampleManager()
	defer done()
	c, err := m.Create("sandbox-1", &cgroup.Resources{
		MemoryMax:     256 << 20,
		MemorySwapMax: 256 << 20, // no swap
		CPUQuota:      50 * time.Millisecond,
		PidsMax:       64,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	if err := c.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		log.Fatal(err)
	}
	pids, err := c.Pids()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("processes in sandbox-1:", len(pids))

	// Remove ends every process in the cgroup, then removes it.
	if err := c.Remove(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("sleep:", cmd.Wait())
	// Output:
	// processes in sandbox-1: 1
	// sleep: signal: killed
}

// A garbage collection removes the cgroups that a crashed program left
// behind, and keeps those with processes in them.
//
// Only the program that created a cgroup knows whether it is still
// needed: a cgroup just created may not hold its first process yet. So a
// collection runs on cgroups whose creators are known to be gone, here a
// parent of the example's own. For berth's sandboxes, sandbox.Recover
// does this: it removes only the cgroups of sandboxes whose records say
// their owners are gone.
func Example_gc() {
	m, done := exampleManager()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A crashed program's cgroup, and a live one's.
	if _, err := m.Create("crashed", nil); err != nil {
		log.Fatal(err)
	}
	live, err := m.Create("running", nil)
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer cmd.Wait()
	if err := live.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		log.Fatal(err)
	}

	// The collection.
	names, err := m.List()
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range names {
		c, err := m.Open(name)
		if err != nil {
			continue // removed meanwhile
		}
		pids, err := c.Pids()
		if err != nil {
			log.Fatal(err)
		}
		if len(pids) > 0 {
			fmt.Println("keep", name)
			continue
		}
		if err := c.Remove(ctx); err != nil {
			log.Fatal(err)
		}
		fmt.Println("removed", name)
	}

	// The live program ends, and removes its own.
	if err := live.Remove(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// removed crashed
	// keep running
}

// Devices lets a cgroup's processes use only the device nodes it lists,
// here /dev/null and /dev/zero, and /dev/fuse for reading and writing:
// opening or making any other node fails with EPERM, even for root.
func ExampleResources_devices() {
	m, done := exampleManager()
	defer done()
	c, err := m.Create("sandbox-2", &cgroup.Resources{Devices: []cgroup.DeviceRule{
		{Type: cgroup.CharDevice, Major: 1, Minor: 3, Access: "rwm"},
		{Type: cgroup.CharDevice, Major: 1, Minor: 5, Access: "rwm"},
		{Type: cgroup.CharDevice, Major: 10, Minor: 229, Access: "rw"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Remove(context.Background())

	cmd, start, out := startBlocked(`for d in /dev/zero /dev/full; do
		if head -c 1 $d >/dev/null 2>&1; then echo "$d: allowed"; else echo "$d: refused"; fi
	done`)
	if err := c.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		log.Fatal(err)
	}
	io.WriteString(start, "go\n")
	start.Close()
	if err := cmd.Wait(); err != nil {
		log.Fatal(err)
	}
	fmt.Print(out)
	// Output:
	// /dev/zero: allowed
	// /dev/full: refused
}
