package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]attack{
		"stdout-read":      stdoutReadAttack,
		"stdout-overwrite": stdoutOverwriteAttack,
		"stdout-truncate":  stdoutTruncateAttack,
		"stdout-path":      stdoutPathAttack,
		"plant-symlink":    plantSymlinkAttack,
		"read-through":     readThroughAttack,
		"setuid-in":        setuidInAttack,
		"mount-flags":      mountFlagsAttack,
		"plant-fifo":       plantFIFOAttack,
	})
}

// stdoutReadAttack reopens its standard output for reading and looks for
// what the host wrote there before (marker=).
func stdoutReadAttack(a args) Verdict {
	fd, err := unix.Open("/proc/self/fd/1", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return refused("reopen", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return refused("read", err)
	}
	if strings.Contains(string(buf[:n]), a.str("marker")) {
		return worked(fmt.Sprintf("read the host's %q back", buf[:min(n, 40)]))
	}
	return Verdict{Attempted: true, Detail: fmt.Sprintf("read %d bytes, none the host's", n)}
}

// stdoutOverwriteAttack reopens its standard output for writing, without
// O_APPEND, and writes text= at offset 0; the host checks its file.
func stdoutOverwriteAttack(a args) Verdict {
	fd, err := unix.Open("/proc/self/fd/1", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return refused("reopen", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, []byte(a.str("text")), 0); err != nil {
		return refused("pwrite", err)
	}
	return worked("overwrote the start of its standard output")
}

// stdoutTruncateAttack truncates its standard output.
func stdoutTruncateAttack(args) Verdict {
	if err := unix.Ftruncate(1, 0); err != nil {
		return refused("ftruncate", err)
	}
	return worked("truncated its standard output")
}

// stdoutPathAttack reads where its standard output leads: a host path
// tells the workload about the host and is a file it may reopen.
func stdoutPathAttack(args) Verdict {
	p, err := os.Readlink("/proc/self/fd/1")
	if err != nil {
		return refused("readlink", err)
	}
	if strings.HasPrefix(p, "/") && p != "/dev/null" {
		return worked("standard output is the host's file " + p)
	}
	return Verdict{Attempted: true, Detail: "standard output is " + p}
}

// plantSymlinkAttack leaves a symlink at path= to target= in a volume,
// for the host's next use of it.
func plantSymlinkAttack(a args) Verdict {
	if err := os.Symlink(a.str("target"), a.str("path")); err != nil {
		return refused("symlink", err)
	}
	return worked("planted " + a.str("path") + " -> " + a.str("target"))
}

// readThroughAttack looks in path= for the host's secret= file and
// writes a file there: both mean a host directory was given to it.
func readThroughAttack(a args) Verdict {
	dir := a.str("path")
	if _, err := os.Stat(dir + "/" + a.str("secret")); err == nil {
		os.WriteFile(dir+"/pwned", []byte("battery"), 0o644)
		return worked("the host's directory is at " + dir)
	}
	err := os.WriteFile(dir+"/pwned", []byte("battery"), 0o644)
	return Verdict{Attempted: true, Detail: fmt.Sprintf("%s is not the host's directory (write: %v)", dir, err)}
}

// setuidInAttack leaves a setuid, world-executable file at path=; the
// host checks who owns it.
func setuidInAttack(a args) Verdict {
	p := a.str("path")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nid\n"), 0o755); err != nil {
		return refused("create", err)
	}
	if err := unix.Chmod(p, 0o4755); err != nil {
		return refused("chmod", err)
	}
	return worked("left a setuid file at " + p)
}

// mountFlagsAttack checks the mount at path=: without nosuid and nodev,
// setuid files and device nodes in it work.
func mountFlagsAttack(a args) Verdict {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return refused("open mountinfo", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 6 || fields[4] != a.str("path") {
			continue
		}
		opts := "," + fields[5] + ","
		var missing []string
		for _, o := range []string{"nosuid", "nodev"} {
			if !strings.Contains(opts, ","+o+",") {
				missing = append(missing, o)
			}
		}
		if len(missing) > 0 {
			return worked(a.str("path") + " is mounted without " + strings.Join(missing, ",") + " (" + fields[5] + ")")
		}
		return Verdict{Attempted: true, Detail: "mounted " + fields[5]}
	}
	return notAttempted("no mount at " + a.str("path"))
}

// plantFIFOAttack replaces path= with a FIFO, says so, and then holds
// its write end open, without writing, once a reader comes: a host tool
// that opens it and reads waits for as long as the sandbox lives.
func plantFIFOAttack(a args) Verdict {
	p := a.str("path")
	if err := unix.Unlink(p); err != nil && err != unix.ENOENT {
		return refused("unlink", err)
	}
	if err := unix.Mkfifo(p, 0o644); err != nil {
		return refused("mkfifo", err)
	}
	report(Verdict{Case: "plant-fifo", Attempted: true, Succeeded: true, Detail: "replaced " + p + " with a FIFO"})
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(fd)
	}
	for {
		unix.Pause()
	}
}
