// Command brokenstorage is a storage plugin with one bug on request, for
// the conformance kit's own tests: the kit must fail it, with a message
// that names the bug. $BROKEN_FAULT chooses the bug:
//
//	upside-down     stacks the layers bottom up
//	release-leaves  Release forgets the key but leaves its directory
//	unknown-ok      Release of an unknown key succeeds
//	stray           Prepare leaves a file under the root that Release keeps
//
// It is otherwise overlay-storage's design at its smallest: an overlay of
// the request's layers under root/<key>/{upper,work}, in $BROKEN_ROOT.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	s := &storage{root: os.Getenv("BROKEN_ROOT"), fault: os.Getenv("BROKEN_FAULT")}
	if err := os.MkdirAll(filepath.Join(s.root, "rootfs"), 0o711); err != nil {
		fmt.Fprintln(os.Stderr, "brokenstorage:", err)
		os.Exit(1)
	}
	plugin.ServeStorage(s)
}

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

type storage struct{ root, fault string }

func (s *storage) Roots() []string { return []string{s.root} }

func (s *storage) dir(key string) string { return filepath.Join(s.root, "rootfs", key) }

func (s *storage) Prepare(ctx context.Context, req *plugin.PrepareRequest) (*plugin.PrepareResult, error) {
	if !keyPattern.MatchString(req.Key) || len(req.Layers) == 0 {
		return nil, plugin.ErrInvalid
	}
	if len(req.UIDMap) > 0 {
		return nil, plugin.ErrUnsupported
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var lowers []string
	for _, l := range req.Layers {
		lowers = append([]string{l.UnpackedPath}, lowers...)
	}
	if s.fault == "upside-down" {
		for i, j := 0, len(lowers)-1; i < j; i, j = i+1, j-1 {
			lowers[i], lowers[j] = lowers[j], lowers[i]
		}
	}
	dir := s.dir(req.Key)
	if err := os.Mkdir(dir, 0o700); errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%q: %w", req.Key, plugin.ErrExists)
	} else if err != nil {
		return nil, err
	}
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if s.fault == "stray" {
		os.WriteFile(filepath.Join(s.root, "stray-"+req.Key), nil, 0o600)
	}
	return &plugin.PrepareResult{Driver: "broken", Mounts: []plugin.Mount{{
		Type:    "overlay",
		Source:  "overlay",
		Options: []string{"lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + upper, "workdir=" + work},
	}}}, nil
}

func (s *storage) Release(ctx context.Context, key string) error {
	if !keyPattern.MatchString(key) {
		return plugin.ErrInvalid
	}
	dir := s.dir(key)
	if _, err := os.Lstat(dir); err != nil {
		if s.fault == "unknown-ok" {
			return nil
		}
		return fmt.Errorf("%q: %w", key, plugin.ErrNotFound)
	}
	if s.fault == "release-leaves" {
		return os.Rename(dir, filepath.Join(s.root, "released-"+key))
	}
	return os.RemoveAll(dir)
}

func (s *storage) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "rootfs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var keys []string
	for _, e := range entries {
		keys = append(keys, e.Name())
	}
	return keys, err
}
