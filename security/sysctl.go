package security

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrSysctl means a sysctl may not be set in a sandbox: it is not one a
// namespace of the sandbox's own holds, so writing it would change the
// host, or the key is malformed.
var ErrSysctl = errors.New("sysctl not allowed")

// ipcSysctls are the kernel.* keys an IPC namespace holds; the fs.mqueue.*
// keys are the namespace's too.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true, "kernel.sem": true,
	"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true, "kernel.shm_rmid_forced": true,
}

// SysctlNamespace returns the namespace that holds the sysctl key, as its
// CLONE_NEW* flag: CLONE_NEWNET for net.*, CLONE_NEWIPC for the System V
// IPC and POSIX message queue keys, CLONE_NEWUTS for kernel.domainname,
// CLONE_NEWUSER for user.* (the namespace limits). A key may be written
// with dots (net.ipv4.ping_group_range) or slashes, as a path under
// /proc/sys. Any other key is host-wide, and an error wrapping ErrSysctl;
// so is kernel.hostname, which the sandbox's options set.
func SysctlNamespace(key string) (int, error) {
	if err := checkSysctlKey(key); err != nil {
		return 0, err
	}
	k := strings.ReplaceAll(key, "/", ".")
	switch {
	case strings.HasPrefix(k, "net."):
		return unix.CLONE_NEWNET, nil
	case ipcSysctls[k] || strings.HasPrefix(k, "fs.mqueue."):
		return unix.CLONE_NEWIPC, nil
	case k == "kernel.domainname":
		return unix.CLONE_NEWUTS, nil
	case strings.HasPrefix(k, "user."):
		return unix.CLONE_NEWUSER, nil
	case k == "kernel.hostname":
		return 0, fmt.Errorf("%w: %s: set the sandbox's hostname instead", ErrSysctl, key)
	}
	return 0, fmt.Errorf("%w: %s is not in a namespace of the sandbox's own: it would change the host", ErrSysctl, key)
}

// SysctlPath returns key's file, relative to /proc/sys.
func SysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return key
	}
	return strings.ReplaceAll(key, ".", "/")
}

// checkSysctlKey refuses keys that are not plain names of a /proc/sys
// file: empty parts, parent references, odd characters.
func checkSysctlKey(key string) error {
	if key == "" || len(key) > 255 {
		return fmt.Errorf("%w: key %q: want 1 to 255 characters", ErrSysctl, key)
	}
	sep := "."
	if strings.Contains(key, "/") {
		sep = "/"
	}
	for _, part := range strings.Split(key, sep) {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%w: key %q has an empty or relative part", ErrSysctl, key)
		}
	}
	for _, c := range key {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-./:@+", c)
		if !ok {
			return fmt.Errorf("%w: key %q: character %q", ErrSysctl, key, c)
		}
	}
	return nil
}

// CheckSysctlValue refuses a value the kernel's sysctl files cannot take.
func CheckSysctlValue(key, value string) error {
	if value == "" || strings.IndexByte(value, 0) >= 0 || len(value) > 4096 {
		return fmt.Errorf("%w: %s: value must be 1 byte to 4 KiB, without NUL bytes", ErrSysctl, key)
	}
	return nil
}
