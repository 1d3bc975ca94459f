// Package testenv sets up what the root tests of several berth packages
// share: a private directory, a store holding the shared test images, a
// cgroup parent, the CNI plugins and a network of the tests' own, and puts
// back what the set-up changes on the host.
//
// It is an ordinary package, not a _test file, because _test files cannot
// be imported by another package's tests; it sits under internal/ so that
// nothing outside the module can import it, and only tests do.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
)

// Alpine and Busybox are the shared images, by file name in ../shared/images
// beside the repository.
const (
	Alpine  = "alpine-minirootfs-3.20.3-x86_64.tar.gz"
	Busybox = "busybox-1.38-musl-oci"
)

// Options say what to set up.
type Options struct {
	// Name prefixes the temporary directory and the cgroup parent.
	Name string
	// Images maps a name in the store to a file of ../shared/images.
	Images map[string]string
	// Bridge and Subnet are those of the tests' own default network, so
	// that they neither take nor disturb the addresses of the host's.
	Bridge string
	Subnet netip.Prefix
}

// Env is the set-up environment.
type Env struct {
	Dir      string // removed by Close
	StateDir string // Dir/state, for sandboxes' state
	Store    *layerfs.Store
	Cgroups  *cgroup.Manager
	Nets     *netplug.Networks

	undo []func()
}

// Setup sets the environment up; the caller runs Close when done, also
// after an error (Close undoes what was done).
func Setup(o Options) (*Env, error) {
	e := &Env{}
	// The bridge plugin turns on the host's IPv4 forwarding; the tests
	// leave it as they found it.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	if was, err := os.ReadFile(forward); err == nil {
		e.undo = append(e.undo, func() { os.WriteFile(forward, was, 0o644) })
	}
	dir, err := os.MkdirTemp("", o.Name+"-")
	if err != nil {
		return e, err
	}
	e.undo = append(e.undo, func() { os.RemoveAll(dir) })
	// Root of a sandbox's user namespace is an ordinary id on the host
	// and must be able to reach the store and state under here.
	if err := os.Chmod(dir, 0o711); err != nil {
		return e, err
	}
	e.Dir = dir
	e.StateDir = filepath.Join(dir, "state")
	if e.Store, err = layerfs.Open(filepath.Join(dir, "store"), nil); err != nil {
		return e, err
	}
	if e.Cgroups, err = cgroup.NewManager(cgroup.Options{Parent: fmt.Sprintf("%s-%d", o.Name, os.Getpid())}); err != nil {
		return e, err
	}
	e.undo = append(e.undo, func() { e.Cgroups.RemoveParent() })
	root, err := moduleRoot()
	if err != nil {
		return e, err
	}
	for name, file := range o.Images {
		src := filepath.Join(root, "..", "shared", "images", file)
		if _, err := e.Store.Import(context.Background(), src, &layerfs.ImportOptions{Name: name}); err != nil {
			return e, err
		}
	}
	// hack/build-cni.sh builds the plugins into netplug's default
	// directory unless they are there at go.mod's version already (a
	// second, at most).
	if out, err := exec.Command(filepath.Join(root, "hack", "build-cni.sh")).CombinedOutput(); err != nil {
		return e, fmt.Errorf("build CNI plugins: %v: %s", err, out)
	}
	e.Nets, err = netplug.Open(&netplug.Options{
		ConfigDir: filepath.Join(dir, "networks"),
		RunDir:    filepath.Join(dir, "run-networks"),
		Default:   netplug.NetworkOptions{Bridge: o.Bridge, Subnet: o.Subnet},
	})
	if err != nil {
		return e, err
	}
	e.undo = append(e.undo, func() { e.Nets.Prune(context.Background()) })
	return e, nil
}

// Close undoes the set-up, last step first.
func (e *Env) Close() {
	for i := len(e.undo) - 1; i >= 0; i-- {
		e.undo[i]()
	}
	e.undo = nil
}

// moduleRoot is the directory holding go.mod, found from the working
// directory up (go test runs a package's tests in its directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// SyncBuffer is a bytes.Buffer a test may read while a sandbox's output
// is still being copied into it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
