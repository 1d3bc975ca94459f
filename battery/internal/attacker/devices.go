package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]attack{
		"device":      deviceAttack,
		"open-node":   openNodeAttack,
		"mknod-in":    mknodInAttack,
		"list-dir":    listDirAttack,
		"open-write":  openWriteAttack,
		"read-masked": readMaskedAttack,
	})
}

// deviceAttack makes a device node (type=b|c major= minor=) in the
// sandbox's /dev and uses it as op says: read, write (marker at offset
// 0), kvm (KVM_CREATE_VM), kmsg (a forged log line), dma (hold a latency
// request) or open. Opening the node at all is the attack succeeding: a
// device allowlist refuses the mknod or the open.
func deviceAttack(a args) Verdict {
	typ := uint32(unix.S_IFCHR)
	if a.str("type") == "b" {
		typ = unix.S_IFBLK
	}
	path := "/dev/battery-node"
	dev := unix.Mkdev(uint32(a.int("major")), uint32(a.int("minor")))
	if err := unix.Mknod(path, typ|0o600, int(dev)); err != nil {
		return refused("mknod", err)
	}
	defer unix.Unlink(path)
	return useNode(path, a)
}

// openNodeAttack uses a node that is already there (path=), one the host
// left in a volume.
func openNodeAttack(a args) Verdict {
	return useNode(a.str("path"), a)
}

func useNode(path string, a args) Verdict {
	op := a.str("op")
	flags := unix.O_RDWR | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_CLOEXEC
	if op == "read" {
		flags = unix.O_RDONLY | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_CLOEXEC
	}
	if op == "write" {
		flags = unix.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC
	}
	if op == "kmsg" {
		// Writing needs no syslog permission; reading would.
		flags = unix.O_WRONLY | unix.O_NOCTTY | unix.O_CLOEXEC
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		return refused("open", err)
	}
	defer unix.Close(fd)
	v := worked(fmt.Sprintf("opened %s (flags %#x)", path, flags))
	switch op {
	case "read":
		buf := make([]byte, 16)
		n, err := unix.Read(fd, buf)
		if err != nil {
			v.Detail += "; read: " + err.Error()
		} else {
			v.Detail += "; read " + hex.EncodeToString(buf[:n])
		}
	case "write":
		n, err := unix.Pwrite(fd, []byte(a.str("marker")), 0)
		if err == nil {
			err = unix.Fsync(fd)
		}
		v.Detail += fmt.Sprintf("; wrote %d bytes (%v)", n, err)
	case "kvm":
		const kvmCreateVM = 0xAE01
		vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
		if errno == 0 {
			unix.Close(int(vm))
			v.Detail += "; KVM_CREATE_VM made a VM"
		} else {
			v.Detail += "; KVM_CREATE_VM: " + errno.Error()
		}
	case "uffd":
		const userfaultfdIOCNew = 0xAA00
		u, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), userfaultfdIOCNew, unix.O_CLOEXEC)
		if errno == 0 {
			unix.Close(int(u))
			v.Detail += "; USERFAULTFD_IOC_NEW gave a userfaultfd"
		} else {
			v.Detail += "; USERFAULTFD_IOC_NEW: " + errno.Error()
		}
	case "kmsg":
		_, err := unix.Write(fd, []byte("<4>"+a.str("marker")+"\n"))
		v.Detail += fmt.Sprintf("; forged a kernel log line (%v)", err)
	case "dma":
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], 0)
		_, err := unix.Write(fd, b[:])
		v.Detail += fmt.Sprintf("; asked for 0us CPU latency host-wide (%v)", err)
	}
	return v
}

// mknodInAttack leaves a device node (type= major= minor=) at path=, in a
// volume the host will look at.
func mknodInAttack(a args) Verdict {
	typ := uint32(unix.S_IFCHR)
	if a.str("type") == "b" {
		typ = unix.S_IFBLK
	}
	dev := unix.Mkdev(uint32(a.int("major")), uint32(a.int("minor")))
	if err := unix.Mknod(a.str("path"), typ|0o666, int(dev)); err != nil {
		return refused("mknod", err)
	}
	return worked("left a device node at " + a.str("path"))
}

// listDirAttack lists path= and succeeds if it holds anything not in
// allowed= (comma-separated names): the contents of /dev, masked
// directories, the network interfaces.
func listDirAttack(a args) Verdict {
	allowed := map[string]bool{}
	for _, n := range strings.Split(a.str("allowed"), ",") {
		if n != "" {
			allowed[n] = true
		}
	}
	ents, err := os.ReadDir(a.str("path"))
	if err != nil {
		return refused("readdir", err)
	}
	var extra []string
	for _, e := range ents {
		if !allowed[e.Name()] {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) > 0 {
		return worked("found " + strings.Join(extra, ","))
	}
	return Verdict{Attempted: true, Detail: fmt.Sprintf("%d entries, all expected", len(ents))}
}

// openWriteAttack opens the first of paths= (comma-separated) that exists
// for writing, and writes nothing: being able to open it is the hole.
func openWriteAttack(a args) Verdict {
	for _, p := range strings.Split(a.str("paths"), ",") {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		return opened(p, unix.O_WRONLY|unix.O_NONBLOCK, "open "+p, " for writing")
	}
	return notAttempted("none of " + a.str("paths") + " exists")
}

// readMaskedAttack reads path= and succeeds if anything comes back: a
// masked file reads as empty, a masked directory lists as empty.
func readMaskedAttack(a args) Verdict {
	p := a.str("path")
	st, err := os.Stat(p)
	if err != nil {
		return refused("stat", err)
	}
	if st.IsDir() {
		ents, err := os.ReadDir(p)
		if err != nil {
			return refused("readdir", err)
		}
		if len(ents) > 0 {
			return worked(fmt.Sprintf("%s lists %d entries, e.g. %s", p, len(ents), ents[0].Name()))
		}
		return Verdict{Attempted: true, Detail: p + " is empty"}
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return refused("open", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return refused("read", err)
	}
	if n > 0 {
		return worked(fmt.Sprintf("read %d bytes of %s: %q", n, p, buf[:min(n, 40)]))
	}
	return Verdict{Attempted: true, Detail: p + " reads as empty"}
}
