package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/netplug"
)

// backendLog is what the test backends were asked to do.
type backendLog struct {
	mu       sync.Mutex
	released []string // keys
	detached []string // ids
	closed   []string // locators
}

func (l *backendLog) add(list *[]string, s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*list = append(*list, s)
}

// testBackend stands for a plugin: a Storage and Network that another
// process made, which only frees what it is asked to, and says where it
// is (Locatable).
type testBackend struct {
	loc   string
	log   *backendLog
	held  []string // keys or ids it holds
	inner Storage  // for Image and Prepare, if set
}

func (b *testBackend) Locator() string { return b.loc }

func (b *testBackend) Image(ctx context.Context, ref string) (*layerfs.Image, error) {
	if b.inner == nil {
		return nil, errors.ErrUnsupported
	}
	return b.inner.Image(ctx, ref)
}

func (b *testBackend) Prepare(ctx context.Context, key string, img *layerfs.Image, opts *layerfs.PrepareOptions) (*layerfs.Rootfs, error) {
	if b.inner == nil {
		return nil, errors.ErrUnsupported
	}
	return b.inner.Prepare(ctx, key, img, opts)
}

func (b *testBackend) Release(ctx context.Context, key string) error {
	if !slices.Contains(b.held, key) {
		return fmt.Errorf("rootfs %s: %w", key, layerfs.ErrNotFound)
	}
	b.held = slices.DeleteFunc(b.held, func(k string) bool { return k == key })
	b.log.add(&b.log.released, key)
	if b.inner != nil {
		return b.inner.Release(ctx, key)
	}
	return nil
}

func (b *testBackend) Rootfses(context.Context) ([]string, error) { return b.held, nil }

func (b *testBackend) Attach(context.Context, string, string, *netplug.AttachOptions) (*netplug.Attachment, error) {
	return nil, errors.ErrUnsupported
}

func (b *testBackend) Detach(_ context.Context, id, netnsPath string) error {
	if netnsPath != "" {
		return fmt.Errorf("detach %s by a namespace path, %q, that may be another's by now", id, netnsPath)
	}
	if !slices.Contains(b.held, id) {
		return fmt.Errorf("sandbox %s: %w", id, netplug.ErrNotFound)
	}
	b.held = slices.DeleteFunc(b.held, func(k string) bool { return k == id })
	b.log.add(&b.log.detached, id)
	return nil
}

func (b *testBackend) Close() error {
	b.log.add(&b.log.closed, b.loc)
	return nil
}

// listingNetwork is a network that lists what it attached, and whose
// not-found is its own words, not netplug's sentinel.
type listingNetwork struct{ testBackend }

func (n *listingNetwork) Attached(context.Context) ([]string, error) { return n.held, nil }

func (n *listingNetwork) Detach(ctx context.Context, id, netnsPath string) error {
	if !slices.Contains(n.held, id) {
		return fmt.Errorf("no link for %s", id)
	}
	return n.testBackend.Detach(ctx, id, netnsPath)
}

// testOpener opens the testBackends it knows by locator, and fails for
// others, as a plugin that is gone does.
type testOpener struct {
	backends map[string]*testBackend
	listing  *listingNetwork
}

func (o testOpener) OpenStorage(_ context.Context, loc string) (Storage, error) {
	if b := o.backends[loc]; b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("no plugin at %s", loc)
}

func (o testOpener) OpenNetwork(_ context.Context, loc string) (Network, error) {
	if o.listing != nil && loc == o.listing.loc {
		return o.listing, nil
	}
	if b := o.backends[loc]; b != nil {
		return b, nil
	}
	return nil, fmt.Errorf("no plugin at %s", loc)
}

// TestRecoverRecordedBackends leaves dead sandboxes whose records name
// plugins: Recover must release and detach through the plugins they
// name, by ID, and keep every sandbox whose plugin it cannot open, or
// whose record of plugins is damaged, for a later try.
func TestRecoverRecordedBackends(t *testing.T) {
	stateDir := t.TempDir()
	parent := fmt.Sprintf("berth-test-%d-backends", os.Getpid())
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer cgm.RemoveParent()

	const (
		withPlugins = "00000000000000b1" // storage and network plugins, both there
		goneStorage = "00000000000000b2" // a storage plugin that cannot be opened
		goneNetwork = "00000000000000b3" // a network plugin that cannot be opened
		damaged     = "00000000000000b4" // backends.json garbled
		builtIn     = "00000000000000b5" // no backends.json: the options' storage
		elsewhere   = "00000000000000b6" // a rootfs in the plugin, recorded in another state directory
		unattached  = "00000000000000b7" // died before its network plugin attached it
	)
	log := &backendLog{}
	storage := &testBackend{loc: "/plugins/storage", log: log, held: []string{"sandbox-" + withPlugins, "sandbox-" + goneNetwork, "sandbox-" + elsewhere}}
	network := &testBackend{loc: "/plugins/network", log: log, held: []string{withPlugins}}
	listing := &listingNetwork{testBackend{loc: "/plugins/listing", log: log}}
	builtin := &testBackend{log: log, held: []string{"sandbox-" + builtIn, "sandbox-" + goneStorage}}
	record := func(id, content string) {
		dir := filepath.Join(stateDir, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if content != "" {
			if err := os.WriteFile(filepath.Join(dir, backendsFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(withPlugins, `{"storage":"/plugins/storage","network":"/plugins/network"}`)
	record(goneStorage, `{"storage":"/plugins/gone"}`)
	record(goneNetwork, `{"storage":"/plugins/storage","network":"/plugins/gone"}`)
	record(damaged, `{"storage":"/plug`)
	record(builtIn, "")
	record(unattached, `{"network":"/plugins/listing"}`)

	res, err := Recover(context.Background(), &Options{Storage: builtin, Cgroups: cgm, StateDir: stateDir,
		Networks: testEnv.nets, Backends: testOpener{backends: map[string]*testBackend{storage.loc: storage, network.loc: network}, listing: listing}})
	if err == nil {
		t.Error("Recover: no error, though sandboxes were left")
	}
	slices.Sort(res.Sandboxes)
	if want := []string{withPlugins, builtIn, unattached}; !slices.Equal(res.Sandboxes, want) {
		t.Errorf("reclaimed %v, want %v", res.Sandboxes, want)
	}
	var failed []string
	for _, f := range res.Failed {
		failed = append(failed, f.Error())
	}
	for _, want := range []string{
		"sandbox " + goneStorage + ": storage /plugins/gone: no plugin at /plugins/gone",
		"sandbox " + goneNetwork + ": network /plugins/gone: no plugin at /plugins/gone",
		"sandbox " + damaged + ": " + ErrDamagedState.Error() + ": backends.json: unexpected end of JSON input",
	} {
		if !slices.Contains(failed, want) {
			t.Errorf("Failed %q does not hold %q", failed, want)
		}
	}
	if len(failed) != 3 {
		t.Errorf("Failed: %q, want the 3 sandboxes whose plugins cannot be had", failed)
	}
	for _, id := range []string{goneStorage, goneNetwork, damaged} {
		if _, err := os.Stat(filepath.Join(stateDir, id)); err != nil {
			t.Errorf("the state of %s, kept for a later Recover, is gone: %v", id, err)
		}
	}
	for _, id := range []string{withPlugins, builtIn, unattached} {
		if _, err := os.Stat(filepath.Join(stateDir, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the state of reclaimed %s: %v", id, err)
		}
	}
	slices.Sort(log.released)
	if want := []string{"sandbox-" + withPlugins, "sandbox-" + builtIn}; !slices.Equal(log.released, want) {
		t.Errorf("released %v, want %v (not the kept sandboxes', nor another state directory's)", log.released, want)
	}
	if want := []string{withPlugins}; !slices.Equal(log.detached, want) {
		t.Errorf("detached %v, want %v", log.detached, want)
	}
	slices.Sort(log.closed)
	if want := []string{listing.loc, network.loc, storage.loc}; !slices.Equal(log.closed, want) {
		t.Errorf("closed %v, want the plugins Recover opened, once each", log.closed)
	}

	// Without an opener, a sandbox that used plugins is kept too.
	res, _ = Recover(context.Background(), &Options{Storage: builtin, Cgroups: cgm, StateDir: stateDir, Networks: testEnv.nets})
	if len(res.Sandboxes) != 0 || len(res.Failed) != 3 || !strings.Contains(res.Failed[0].Error()+res.Failed[1].Error(), "no Options.Backends") {
		t.Errorf("Recover without Backends: %+v", res)
	}
}

// TestBackendsRecordedBeforePrepare starts a sandbox on a Locatable
// storage, which checks, when asked to prepare, that the sandbox has
// recorded it already: a crash in the middle of Prepare must leave gc
// the name of the plugin to release the rootfs with.
func TestBackendsRecordedBeforePrepare(t *testing.T) {
	log := &backendLog{}
	storage := &recordChecker{testBackend: testBackend{loc: "/plugins/checked", log: log, inner: testEnv.store}, stateDir: testEnv.stateDir}
	sb := New("busybox:test", opts(func(o *Options) { o.Storage = storage; o.Args = []string{"true"} }))
	if _, err := sb.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if storage.seen == nil {
		t.Fatal("Prepare was not called")
	}
	if storage.seen.Storage != storage.loc || storage.seen.Network != "" {
		t.Errorf("backends.json when Prepare was called: %+v, want the storage's locator", *storage.seen)
	}
	if _, err := os.Stat(filepath.Join(testEnv.stateDir, sb.ID())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state left after Run: %v", err)
	}
}

type recordChecker struct {
	testBackend
	stateDir string
	seen     *backendRecord
}

func (c *recordChecker) Prepare(ctx context.Context, key string, img *layerfs.Image, opts *layerfs.PrepareOptions) (*layerfs.Rootfs, error) {
	id := strings.TrimPrefix(key, "sandbox-")
	b, err := os.ReadFile(filepath.Join(c.stateDir, id, backendsFile))
	if err != nil {
		return nil, fmt.Errorf("no record of the backend before Prepare: %w", err)
	}
	c.seen = &backendRecord{}
	if err := json.Unmarshal(b, c.seen); err != nil {
		return nil, err
	}
	c.held = append(c.held, key)
	return c.testBackend.Prepare(ctx, key, img, opts)
}

// TestRecoverSweepsNoPluginStorage: a plugin's rootfses are the host's,
// shared by every state directory and program that uses the plugin, so
// Recover's sweep of rootfses without a record must leave them alone even
// when the plugin is the options' own storage, as a program that hands
// Recover the Options it makes sandboxes with does.
func TestRecoverSweepsNoPluginStorage(t *testing.T) {
	parent := fmt.Sprintf("berth-test-%d-sweep", os.Getpid())
	cgm, err := cgroup.NewManager(cgroup.Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	defer cgm.RemoveParent()
	log := &backendLog{}
	const live = "sandbox-00000000000000c1" // another state directory's, alive
	storage := &testBackend{loc: "/plugins/storage", log: log, held: []string{live}}
	res, err := Recover(context.Background(), &Options{Storage: storage, Cgroups: cgm, StateDir: t.TempDir(), Networks: testEnv.nets})
	if err != nil {
		t.Fatal(err)
	}
	if len(log.released) != 0 || len(res.Rootfs) != 0 {
		t.Errorf("Recover released %v (reported %v) of a plugin's rootfses, which another state directory may hold", log.released, res.Rootfs)
	}
}
