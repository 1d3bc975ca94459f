//go:build linux

package cgroup_test

import (
	"context"
	"log"
	"os/exec"
	"time"

	"github.com/berth-dev/berth/cgroup"
)

func Example() {
	m, err := cgroup.NewManager(cgroup.Options{})
	if err != nil {
		log.Fatal(err)
	}
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
	defer c.Remove(ctx)

	cmd := exec.Command("sleep", "1")
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	if err := c.Add(cmd.Process.Pid); err != nil {
		log.Fatal(err)
	}
	cmd.Wait()

	if oom, _ := c.OOMKilled(); oom {
		log.Print("sandbox-1 ran out of memory")
	}
}

// Gc removes what a crashed process left behind.
func Example_gc() {
	m, err := cgroup.NewManager(cgroup.Options{})
	if err != nil {
		log.Fatal(err)
	}
	names, err := m.List()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range names {
		c, err := m.Open(name)
		if err != nil {
			continue // removed meanwhile
		}
		if err := c.Remove(ctx); err != nil {
			log.Print(err)
		}
	}
}

// Devices lets a cgroup's processes use only the device nodes it lists,
// here /dev/null and /dev/zero, and /dev/fuse for reading and writing:
// opening or making any other node fails with EPERM, even for root.
func ExampleResources_devices() {
	m, err := cgroup.NewManager(cgroup.Options{})
	if err != nil {
		log.Fatal(err)
	}
	c, err := m.Create("sandbox-2", &cgroup.Resources{Devices: []cgroup.DeviceRule{
		{Type: cgroup.CharDevice, Major: 1, Minor: 3, Access: "rwm"},
		{Type: cgroup.CharDevice, Major: 1, Minor: 5, Access: "rwm"},
		{Type: cgroup.CharDevice, Major: 10, Minor: 229, Access: "rw"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Remove(context.Background())
}
