// Command storage is a storage plugin that does as little as the
// protocol allows, so that timing it times the protocol: Prepare records
// the key and answers with one small tmpfs, which berth mounts, and
// Release forgets the key. The benchmarks in plugin/ and berth-bench run
// it; it is not an example of a useful plugin.
//
// Its root, which berth wants announced although a tmpfs has no source
// in it, is the directory "root" beside the binary: the benchmarks build
// it into a temporary directory, and the root goes with that.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nop storage:", err)
		os.Exit(1)
	}
	root := filepath.Join(filepath.Dir(exe), "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "nop storage:", err)
		os.Exit(1)
	}
	plugin.ServeStorage(&nop{root: root, keys: map[string]bool{}})
}

type nop struct {
	root string
	mu   sync.Mutex
	keys map[string]bool
}

func (n *nop) Roots() []string { return []string{n.root} }

func (n *nop) Prepare(_ context.Context, req *plugin.PrepareRequest) (*plugin.PrepareResult, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.keys[req.Key] {
		return nil, fmt.Errorf("rootfs %q: %w", req.Key, plugin.ErrExists)
	}
	n.keys[req.Key] = true
	return &plugin.PrepareResult{
		Mounts: []plugin.Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=64k", "mode=0755"}}},
		Driver: "nop",
	}, nil
}

func (n *nop) Release(_ context.Context, key string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.keys[key] {
		return fmt.Errorf("rootfs %q: %w", key, plugin.ErrNotFound)
	}
	delete(n.keys, key)
	return nil
}

func (n *nop) List(context.Context) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	keys := make([]string, 0, len(n.keys))
	for k := range n.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys, nil
}
