package battery

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox"
)

// deviceCases make host devices in the sandbox (or find them in a volume)
// and use them. Each must be refused with EPERM, by the missing
// CAP_MKNOD or by the device allowlist, which DefaultWithMknod tests on
// its own.
func deviceCases() []hostile {
	also := []variant{defaultWithMknod}
	node := func(name, attacks, typ string, major, minor func(t *testing.T) uint32, op string, check func(t *testing.T, a *attempt)) hostile {
		return hostile{
			name: name, attacks: attacks, also: also, errno: "EPERM",
			prepare: func(t *testing.T, a *attempt) {
				maj, min := major(t), minor(t)
				hostCanOpen(t, typ, maj, min, op)
				a.attack("device", "type", typ, "major", maj, "minor", min, "op", op, "marker", a.marker)
				if check != nil {
					check(t, a)
				}
			},
		}
	}
	fixed := func(n uint32) func(*testing.T) uint32 { return func(*testing.T) uint32 { return n } }
	misc := func(name string) func(*testing.T) uint32 {
		return func(t *testing.T) uint32 {
			m, ok := miscMinor(name)
			if !ok {
				t.Skipf("the host has no misc device %s", name)
			}
			return m
		}
	}
	loopMinor := func(t *testing.T) uint32 { return loop(t).minor }
	backingIntact := func(t *testing.T, a *attempt) {
		l := loop(t)
		a.check(func() string { return l.holds(a.marker) })
	}
	kmsgClean := func(t *testing.T, a *attempt) {
		a.check(func() string {
			found, err := kmsgHas(a.marker)
			if err != nil {
				return "cannot read the host's /dev/kmsg: " + err.Error()
			}
			if found {
				return "the host's kernel log holds the forged line " + a.marker
			}
			return ""
		})
	}
	disk := func(part string) func(*testing.T) uint32 {
		return func(t *testing.T) uint32 {
			_, major, minor, ok := hostDisk()
			if !ok {
				t.Skip("the host has no disk in /proc/partitions")
			}
			if part == "major" {
				return major
			}
			return minor
		}
	}
	return []hostile{
		node("dev-loop-read", "reads the host's loop device (block 7:N)", "b", fixed(7), loopMinor, "read", nil),
		node("dev-loop-write", "writes the host's loop device's backing file", "b", fixed(7), loopMinor, "write", backingIntact),
		node("dev-disk-read", "reads the host's disk (8:0, 253:0, 259:0 or whichever it has)", "b", disk("major"), disk("minor"), "read", nil),
		node("dev-kvm", "creates a VM on the host's hypervisor (10:232)", "c", fixed(10), fixed(232), "kvm", nil),
		node("dev-userfaultfd", "gets a userfaultfd through /dev/userfaultfd, past seccomp", "c", fixed(10), misc("userfaultfd"), "uffd", nil),
		node("dev-console", "opens the host's console (5:1)", "c", fixed(5), fixed(1), "open", nil),
		node("dev-tty1", "opens the host's virtual terminal (4:1)", "c", fixed(4), fixed(1), "open", nil),
		node("dev-ttyS0", "opens the host's serial port (4:64)", "c", fixed(4), fixed(64), "open", nil),
		node("dev-kmsg-forge", "forges a line in the host's kernel log (1:11)", "c", fixed(1), fixed(11), "kmsg", kmsgClean),
		node("dev-cpu-dma-latency", "changes a host-wide power setting (cpu_dma_latency)", "c", fixed(10), misc("cpu_dma_latency"), "dma", nil),
		node("dev-mem", "reads the host's physical memory (1:1)", "c", fixed(1), fixed(1), "read", nil),
		{
			name: "dev-beyond-passed", also: also, errno: "EPERM",
			attacks: "reaches a device other than the one the caller passed in (the allowlist must not open up)",
			prepare: func(t *testing.T, a *attempt) {
				passDevice(a.opts, loop(t).path)
				hostCanOpen(t, "c", 10, 232, "kvm")
				a.attack("device", "type", "c", "major", 10, "minor", 232, "op", "kvm")
			},
		},
		{
			name: "dev-own-rootfs-loop", also: also, errno: "EPERM",
			attacks: "opens the loop device that holds its own disk quota's filesystem (block 7:N)",
			prepare: func(t *testing.T, a *attempt) {
				a.opts.DiskQuota = diskQuota
				a.attack("own-rootfs-loop")
			},
		},
		{
			name: "dev-nodes-listed", attacks: "finds device nodes beyond the documented /dev",
			prepare: func(t *testing.T, a *attempt) {
				// SECURITY.md: null, zero, full, random, urandom, tty, a
				// private devpts, shm and mqueue; ptmx and the fd links go
				// with devpts and /proc.
				allowed := []string{"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "core", "console"}
				a.attack("list-dir", "path", "/dev", "allowed", strings.Join(allowed, ","))
			},
		},
		{
			name: "vol-devnode-open", attacks: "opens a host device node left in a volume (nodev, device allowlist)",
			prepare: func(t *testing.T, a *attempt) {
				l := loop(t)
				dir := volumeDir(t)
				// Mode 0666, so that only nodev and the allowlist stand in
				// the way, not the node's permissions.
				if err := mknodHost(dir+"/loop", l.minor); err != nil {
					t.Fatal(err)
				}
				a.mount(dir, "/vol", false)
				a.attack("open-node", "path", "/vol/loop", "op", "write", "marker", a.marker)
				a.check(func() string { return l.holds(a.marker) })
			},
		},
	}
}

// hostCanOpen skips the case unless the host's own root can open the
// device as the attacker would: where the host cannot, a refusal in the
// sandbox proves nothing about berth.
func hostCanOpen(t *testing.T, typ string, major, minor uint32, op string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node")
	if err := mknod(path, typ[0], major, minor); err != nil {
		t.Fatal(err)
	}
	flags := unix.O_RDWR | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_CLOEXEC
	switch op {
	case "read":
		flags = unix.O_RDONLY | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_CLOEXEC
	case "kmsg":
		flags = unix.O_WRONLY | unix.O_CLOEXEC
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		t.Skipf("the host's own root cannot open %s %d:%d here (%v), so a refusal would prove nothing", typ, major, minor, err)
	}
	unix.Close(fd)
}

// passDevice gives the sandbox the host device at path, with all access
// (Options.Devices, `berth run --device`), at the same path in its /dev.
func passDevice(o *sandbox.Options, path string) {
	o.Devices = append(o.Devices, sandbox.Device{Source: path, Destination: "/dev/" + filepath.Base(path), Access: "rwm"})
}

func mknodHost(path string, loopMinor uint32) error {
	if err := mknod(path, 'b', 7, loopMinor); err != nil {
		return fmt.Errorf("mknod %s: %w", path, err)
	}
	return os.Chmod(path, 0o666)
}
