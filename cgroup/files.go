//go:build linux

package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// writeFile writes one value to a cgroup interface file. It never creates
// the file: a missing file means a missing controller (or cgroup), which
// must not be papered over with a regular file.
func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("cgroup: %w", err)
	}
	// cgroupfs takes each write(2) as one command, so the value is written
	// whole, in a single call.
	_, err = f.Write([]byte(value))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("cgroup: write %q to %s: %w", value, path, err)
	}
	return nil
}

// readString returns a file's content without surrounding white space.
func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// readFields returns the white-space separated words of a file such as
// cgroup.controllers.
func readFields(path string) ([]string, error) {
	s, err := readString(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(s), nil
}

// readUint reads a file holding one number. ok is false if the file does
// not exist.
func readUint(path string) (n uint64, ok bool, err error) {
	s, err := readString(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("cgroup: %s: %w", path, err)
	}
	return n, true, nil
}

// readKeyed reads a flat keyed file ("key value" lines, as cpu.stat,
// memory.events, cgroup.events, memory.oom_control). ok is false if the
// file does not exist. Values that are not numbers are left out.
func readKeyed(path string) (kv map[string]uint64, ok bool, err error) {
	s, err := readString(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	kv = make(map[string]uint64)
	for line := range strings.Lines(s) {
		k, v, found := strings.Cut(strings.TrimSpace(line), " ")
		if !found {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			kv[k] = n
		}
	}
	return kv, true, nil
}

// readPids reads a cgroup.procs (or tasks) file.
func readPids(path string) ([]int, error) {
	s, err := readString(path)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(s) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("cgroup: %s: %w", path, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}
