package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// staleAfter is how old a socket directory must be before SweepRunDir
// takes it for a dead plugin's: go-plugin makes the directory before the
// plugin binds its socket in it, so a start in progress has one with no
// listener for a moment.
const staleAfter = time.Minute

// SweepRunDir removes the socket directories that plugins started under
// runDir (empty means /run/berth/plugins) left when the berth that
// started them was killed: a plugin dies with its berth, but its socket
// directory stays. A directory is taken only if it is go-plugin's
// (plugin-dir*), older than a minute, and no socket in it is bound (the
// kernel's list of unix sockets, /proc/net/unix, names none of them), so a
// live plugin's, or one being started, is left alone. It returns the
// directories removed.
func SweepRunDir(runDir string) ([]string, error) {
	if runDir == "" {
		runDir = defaultRunDir
	}
	ents, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("plugin run directory: %w", err)
	}
	bound, err := boundUnixSockets()
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "plugin-dir") {
			continue
		}
		dir := filepath.Join(runDir, e.Name())
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < staleAfter {
			continue
		}
		socks, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		live := false
		for _, s := range socks {
			if bound[filepath.Join(dir, s.Name())] {
				live = true
			}
		}
		if live {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// boundUnixSockets returns the paths unix sockets are bound to, from
// /proc/net/unix (the last field of each line, when it is a path).
func boundUnixSockets() (map[string]bool, error) {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bound := make(map[string]bool)
	sc := bufio.NewScanner(io.LimitReader(f, 64<<20))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 8 && strings.HasPrefix(fields[7], "/") {
			bound[fields[7]] = true
		}
	}
	return bound, sc.Err()
}
