package plugintest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// StorageOptions tune Storage. The zero value (or nil) runs every check
// with the kit's own store and image.
type StorageOptions struct {
	// Settings are the plugin's own settings, sent with every Prepare
	// (plugin.Options.Settings).
	Settings map[string]string
	// Env is added to the plugin's environment, as KEY=VALUE entries
	// (plugin.Options.Env): berth starts a plugin without arguments and
	// without its own environment, so this is how a test points the
	// plugin at directories of its own.
	Env []string
	// Host, if set, is the base of the options the kit opens the plugin
	// with. The kit sets Store (to StorageOptions.Store or its own), adds
	// Env, and fills in MountDir and RunDir (directories of its own),
	// Logger (the test's log) and Settings where they are empty.
	Host *plugin.Options
	// Store and Image, if set, are the store and the image (a reference
	// in it) the kit prepares rootfses from. By default the kit opens a
	// store of its own in a temporary directory and imports a tiny
	// two-layer image it builds in memory, whose files it then checks in
	// every rootfs; with an Image of yours it only checks that the rootfs
	// is not empty and is writable.
	Store *layerfs.Store
	Image string
	// Keep are paths the plugin may leave under its roots after all its
	// rootfses are released (its own bookkeeping), as filepath.Match
	// patterns relative to a root: "state.json", "cache/*". The kit
	// reports anything else that was not there before a check began.
	Keep []string
	// Concurrency is how many Prepares the Concurrent check makes at
	// once; 0 means 16.
	Concurrency int
	// Skip names checks to skip (the names of Storage's subtests, such
	// as "Restart" or "UserNS"), each with the reason the test log gives.
	// Checks of what the plugin does not claim (its capabilities) skip
	// themselves.
	Skip map[string]string
}

// Storage checks that the storage plugin at path keeps berth's storage
// contract, each check a subtest of t:
//
//   - Info: it says it is a storage plugin, speaks ProtocolVersion and
//     keeps its rootfses under absolute, clean roots;
//   - RoundTrip: a rootfs prepared from an image through
//     plugin.OpenStorage shows the image's files (layers in order,
//     whiteouts and opaque directories honoured, owners kept), is
//     writable, is listed while it exists, does not see another's writes,
//     and is gone after Release;
//   - ReleaseTwice, UnknownKey: releasing a key not prepared fails with an
//     error that wraps plugin.ErrNotFound and layerfs.ErrNotFound;
//   - InvalidKey: keys that are not names ("../x", "a/b"...) are refused;
//   - ExistingKey: preparing a key in use fails with ErrExists and leaves
//     the rootfs alone;
//   - Concurrent: many Prepares and Releases at once, for distinct keys;
//   - Cancel: a cancelled or expired context fails the call with the
//     context's error and leaves nothing prepared, also when it comes in
//     the middle of the call;
//   - Restart: after kill -9 of the plugin the next call fails with
//     ErrPluginExited or succeeds, the one after succeeds, and what was
//     prepared before the crash can still be released; KillMidPrepare:
//     Prepares cut short by kill -9 can all be released or are unknown;
//   - UserNS: with a user namespace's maps the rootfs shows the files'
//     owners mapped (skipped when neither the plugin nor berth can);
//   - Diff: the changes made in a rootfs come back as an OCI layer tar
//     holding them and nothing else, a deletion as a whiteout (capability
//     "diff"; with the kit's own image), and Commit makes them an image
//     berth's own store prepares;
//   - Quota: a rootfs with a disk quota takes writes up to it and refuses
//     them past it with ENOSPC or EDQUOT (capability "quota");
//   - Close: the plugin's process is gone after Close.
//
// Every check ends by releasing what it prepared and checking that nothing
// is left behind: no mounts under the plugin's roots or berth's mount
// directory, no new paths under the roots but those opts.Keep allows, no
// keys of the kit's in the plugin's List, no plugin process after Close.
//
// Storage needs root (it mounts), and skips the test without it.
func Storage(t *testing.T, path string, opts *StorageOptions) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("plugintest: the storage kit mounts rootfses and must run as root")
	}
	k := newStorageKit(t, path, opts)
	for _, c := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"Info", k.testInfo},
		{"RoundTrip", k.testRoundTrip},
		{"ReleaseTwice", k.testReleaseTwice},
		{"UnknownKey", k.testUnknownKey},
		{"InvalidKey", k.testInvalidKey},
		{"ExistingKey", k.testExistingKey},
		{"Concurrent", k.testConcurrent},
		{"Cancel", k.testCancel},
		{"Restart", k.testRestart},
		{"KillMidPrepare", k.testKillMidPrepare},
		{"UserNS", k.testUserNS},
		{"Diff", k.testDiff},
		{"Quota", k.testQuota},
		{"Close", k.testClose},
	} {
		t.Run(c.name, func(t *testing.T) {
			if why, ok := k.opts.Skip[c.name]; ok {
				t.Skip(why)
			}
			c.f(t)
		})
	}
}

// storageKit is what Storage's checks share.
type storageKit struct {
	path     string
	opts     StorageOptions
	store    *layerfs.Store
	img      *layerfs.Image
	tiny     bool   // img is the kit's own, whose files are checked
	mountDir string // berth's, where it mounts the plugin's rootfses
	runDir   string // berth's, where the plugin's socket is
	prefix   string // of every key the kit makes, unique to this run
}

func newStorageKit(t *testing.T, path string, opts *StorageOptions) *storageKit {
	t.Helper()
	k := &storageKit{path: path, prefix: "kit-" + randomHex(4) + "-"}
	if opts != nil {
		k.opts = *opts
	}
	if k.opts.Concurrency <= 0 {
		k.opts.Concurrency = 16
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("plugintest: the plugin binary: %v", err)
	}
	tmp := t.TempDir()
	// Root of a user namespace is an ordinary id on the host and must
	// be able to reach the rootfses under here.
	if err := os.Chmod(tmp, 0o711); err != nil {
		t.Fatal(err)
	}
	k.mountDir = filepath.Join(tmp, "mnt")
	k.runDir = filepath.Join(tmp, "run")
	for _, d := range []string{k.mountDir, k.runDir} {
		if err := os.Mkdir(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if h := k.opts.Host; h != nil {
		if h.MountDir != "" {
			k.mountDir = h.MountDir
		}
		if h.RunDir != "" {
			k.runDir = h.RunDir
		}
	}
	ctx := callCtx(t)
	k.store = k.opts.Store
	if k.store == nil {
		s, err := layerfs.Open(filepath.Join(tmp, "store"), nil)
		if err != nil {
			t.Fatalf("plugintest: open a store: %v", err)
		}
		k.store = s
	}
	var err error
	if k.opts.Image != "" {
		k.img, err = k.store.Image(ctx, k.opts.Image)
	} else {
		k.tiny = true
		k.img, err = importTinyImage(ctx, k.store, tmp)
	}
	if err != nil {
		t.Fatalf("plugintest: the image: %v", err)
	}
	return k
}

// hostOptions are the options the kit opens the plugin with.
func (k *storageKit) hostOptions(t *testing.T) *plugin.Options {
	var o plugin.Options
	if k.opts.Host != nil {
		o = *k.opts.Host
	}
	o.Store, o.MountDir, o.RunDir = k.store, k.mountDir, k.runDir
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	if o.Settings == nil {
		o.Settings = k.opts.Settings
	}
	o.Env = append(slices.Clone(o.Env), k.opts.Env...)
	return &o
}

// key returns a key unique to this run of the kit.
func (k *storageKit) key(name string) string { return k.prefix + name }

// A storageSession is one opened plugin, checked for leftovers when the
// check that opened it ends.
type storageSession struct {
	k      *storageKit
	s      *plugin.Storage
	others []int // processes of the binary that were not this session's
	roots  []string
	before tree
	// prepared are the keys prepared and not released yet, released
	// when the check ends whatever happened.
	mu       sync.Mutex
	prepared map[string]bool
}

// open starts the plugin for one check, and has the check end by
// releasing what is left and auditing what the plugin left behind.
func (k *storageKit) open(t *testing.T) *storageSession {
	t.Helper()
	others, err := pluginProcs(k.path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := plugin.OpenStorage(callCtx(t), k.path, k.hostOptions(t))
	if err != nil {
		t.Fatalf("OpenStorage(%s): %v", k.path, err)
	}
	sess := &storageSession{k: k, s: s, others: others, prepared: map[string]bool{}}
	t.Cleanup(func() { sess.finish(t) })
	sess.roots = s.Info().Roots
	for _, r := range sess.roots {
		// The audit walks the roots: not the host's whole tree.
		if err := checkRoot(r); err != nil {
			t.Fatalf("plugintest: the plugin's Info: %v", err)
		}
	}
	if sess.before, err = snapshot(sess.audited()); err != nil {
		t.Fatalf("plugintest: list the plugin's roots: %v", err)
	}
	return sess
}

// finish releases what the check left prepared, closes the plugin and
// reports anything left behind.
func (sess *storageSession) finish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, key := range slices.Sorted(maps.Keys(sess.prepared)) {
		if err := sess.s.Release(ctx, key); err != nil && !errors.Is(err, plugin.ErrNotFound) {
			t.Errorf("cleanup: Release(%q): %v", key, err)
		}
	}
	if keys, err := sess.s.Rootfses(ctx); err != nil {
		t.Errorf("cleanup: List: %v", err)
	} else if left := sess.k.ours(keys); len(left) > 0 {
		t.Errorf("left behind: the plugin still lists %q after they were released", left)
	}
	if m, err := mountsUnder(sess.audited()...); err != nil {
		t.Errorf("cleanup: %v", err)
	} else if len(m) > 0 {
		t.Errorf("left behind: mounts under the plugin's roots or berth's mount directory: %q", m)
	}
	if sess.before == nil {
		// The roots were refused before they were walked.
	} else if now, err := snapshot(sess.audited()); err != nil {
		t.Errorf("cleanup: %v", err)
	} else if left := newSince(sess.before, now, sess.roots, sess.k.opts.Keep); len(left) > 0 {
		t.Errorf("left behind under the plugin's roots or berth's mount directory (StorageOptions.Keep allows the plugin's own bookkeeping): %q", left)
	}
	pids := sess.pids(t)
	if err := sess.s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if alive := waitGone(pids, 10*time.Second); len(alive) > 0 {
		t.Errorf("left behind: plugin processes %v still run 10s after Close", alive)
	}
	if left, err := dirEntries(sess.k.runDir); err != nil {
		t.Errorf("cleanup: %v", err)
	} else if len(left) > 0 {
		t.Errorf("left behind in berth's plugin run directory %s after Close: %q", sess.k.runDir, left)
	}
}

// audited are the directories whose new paths the session's end
// reports: the plugin's roots and berth's mount directory.
func (sess *storageSession) audited() []string {
	return append([]string{sess.k.mountDir}, sess.roots...)
}

// ours returns the keys of keys that this run of the kit made.
func (k *storageKit) ours(keys []string) []string {
	var out []string
	for _, key := range keys {
		if strings.HasPrefix(key, k.prefix) {
			out = append(out, key)
		}
	}
	return out
}

// pids returns the processes running the plugin for this session.
func (sess *storageSession) pids(t *testing.T) []int {
	t.Helper()
	return sessionPids(t, sess.k.path, sess.others)
}

func sessionPids(t *testing.T, path string, others []int) []int {
	t.Helper()
	all, err := pluginProcs(path)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, pid := range all {
		if !slices.Contains(others, pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// prepare prepares key and records it for the cleanup.
func (sess *storageSession) prepare(ctx context.Context, key string, opts *layerfs.PrepareOptions) (*layerfs.Rootfs, error) {
	sess.mu.Lock()
	sess.prepared[key] = true
	sess.mu.Unlock()
	return sess.s.Prepare(ctx, key, sess.k.img, opts)
}

// release releases key.
func (sess *storageSession) release(ctx context.Context, key string) error {
	err := sess.s.Release(ctx, key)
	if err == nil {
		sess.mu.Lock()
		delete(sess.prepared, key)
		sess.mu.Unlock()
	}
	return err
}

// mustPrepare prepares key and checks the rootfs.
func (sess *storageSession) mustPrepare(t *testing.T, key string) *layerfs.Rootfs {
	t.Helper()
	rf, err := sess.prepare(callCtx(t), key, nil)
	if err != nil {
		t.Fatalf("Prepare(%q): %v", key, err)
	}
	sess.k.checkRootfs(t, key, rf, func(id uint32) uint32 { return id })
	return rf
}

func (sess *storageSession) mustRelease(t *testing.T, key string) {
	t.Helper()
	if err := sess.release(callCtx(t), key); err != nil {
		t.Fatalf("Release(%q): %v", key, err)
	}
}

// listed reports whether the plugin lists key.
func (sess *storageSession) listed(t *testing.T, key string) bool {
	t.Helper()
	keys, err := sess.s.Rootfses(callCtx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return slices.Contains(keys, key)
}

// checkRootfs checks what Prepare returned and the files it shows.
func (k *storageKit) checkRootfs(t *testing.T, key string, rf *layerfs.Rootfs, owner func(uint32) uint32) {
	t.Helper()
	switch {
	case rf == nil:
		t.Fatalf("Prepare(%q) returned no rootfs and no error", key)
	case rf.Key != key:
		t.Errorf("Prepare(%q): the rootfs's Key is %q", key, rf.Key)
	case rf.Image != k.img.Digest:
		t.Errorf("Prepare(%q): the rootfs's Image is %v, want %v", key, rf.Image, k.img.Digest)
	case rf.Driver == "":
		t.Errorf("Prepare(%q): the rootfs's Driver is empty", key)
	case !filepath.IsAbs(rf.Path):
		t.Fatalf("Prepare(%q): the rootfs's Path %q is not absolute", key, rf.Path)
	}
	if k.tiny {
		if err := checkTinyRootfs(rf.Path, owner); err != nil {
			t.Errorf("Prepare(%q): the rootfs at %s does not show the image as it is:\n%v", key, rf.Path, err)
		}
		return
	}
	if entries, err := os.ReadDir(rf.Path); err != nil {
		t.Errorf("Prepare(%q): read the rootfs: %v", key, err)
	} else if len(entries) == 0 {
		t.Errorf("Prepare(%q): the rootfs at %s is empty", key, rf.Path)
	}
}

// checkWritable writes a file in the rootfs and reads it back.
func checkWritable(t *testing.T, rf *layerfs.Rootfs, name, body string) {
	t.Helper()
	p := filepath.Join(rf.Path, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatalf("the rootfs of %q is not writable: %v", rf.Key, err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != body {
		t.Fatalf("the rootfs of %q: read back /%s: %q, %v; want %q", rf.Key, name, got, err, body)
	}
}

func (k *storageKit) testInfo(t *testing.T) {
	sess := k.open(t)
	info := sess.s.Info()
	t.Logf("plugin %q version %q, protocol %d, capabilities %q, roots %q", info.Name, info.Version, info.Protocol, info.Capabilities, info.Roots)
	checkInfo(t, info, plugin.KindStorage, []string{plugin.CapDiff, plugin.CapIDMap, plugin.CapQuota})
	if len(info.Roots) == 0 {
		t.Errorf("Info: the plugin names no roots: berth could accept no mount of its")
	}
	for _, r := range info.Roots {
		if err := checkRoot(r); err != nil {
			t.Errorf("Info: %v", err)
		}
	}
}

// checkRoot says what is wrong with a root a plugin announced.
func checkRoot(r string) error {
	switch {
	case !filepath.IsAbs(r) || filepath.Clean(r) != r:
		return fmt.Errorf("root %q is not an absolute, clean path", r)
	case r == "/" || within("/proc", r) || within("/sys", r) || within("/dev", r):
		return fmt.Errorf("root %q would let the plugin name the host's system files as mount sources", r)
	}
	return nil
}

// checkInfo checks what every kind of plugin's Info must say.
func checkInfo(t *testing.T, info plugin.Info, kind string, known []string) {
	t.Helper()
	if info.Kind != kind {
		t.Errorf("Info: kind %q, want %q", info.Kind, kind)
	}
	if info.Name == "" {
		t.Errorf("Info: the plugin has no name (berth plugin ls and berth's logs show it)")
	}
	if info.Protocol != plugin.ProtocolVersion {
		t.Errorf("Info: protocol %d, want %d", info.Protocol, plugin.ProtocolVersion)
	}
	for _, c := range info.Capabilities {
		if !slices.Contains(known, c) {
			t.Errorf("Info: capability %q is not one a %s plugin can have (%q)", c, kind, known)
		}
	}
	if !slices.IsSorted(info.Capabilities) || len(slices.Compact(slices.Clone(info.Capabilities))) != len(info.Capabilities) {
		t.Errorf("Info: capabilities %q are not sorted and distinct", info.Capabilities)
	}
}

func (k *storageKit) testRoundTrip(t *testing.T) {
	sess := k.open(t)
	key := k.key("round")
	rf := sess.mustPrepare(t, key)
	checkWritable(t, rf, "kit-written", "written\n")
	if k.tiny {
		checkWritable(t, rf, releaseFile, "rewritten\n")
		if err := os.Remove(filepath.Join(rf.Path, keptFile)); err != nil {
			t.Fatalf("the rootfs of %q: remove one of the image's files: %v", key, err)
		}
	}
	if !sess.listed(t, key) {
		t.Errorf("List does not name %q, which is prepared", key)
	}
	// Another rootfs of the same image sees none of those changes, nor
	// does one made after this one is gone: the image's layers are shared
	// and must not be written to.
	other := k.key("round-other")
	orf := sess.mustPrepare(t, other)
	if orf.Path == rf.Path {
		t.Fatalf("%q and %q are prepared at the same path %s", key, other, rf.Path)
	}
	if _, err := os.Lstat(filepath.Join(orf.Path, "kit-written")); err == nil {
		t.Errorf("a file written in the rootfs of %q shows in that of %q", key, other)
	}
	sess.mustRelease(t, other)
	sess.mustRelease(t, key)
	if sess.listed(t, key) {
		t.Errorf("List names %q after Release", key)
	}
	if m, _ := mountsUnder(rf.Path); len(m) > 0 {
		t.Errorf("the rootfs of %q is still mounted at %q after Release", key, m)
	}
	again := sess.mustPrepare(t, k.key("round-again"))
	if _, err := os.Lstat(filepath.Join(again.Path, "kit-written")); err == nil {
		t.Errorf("a file written in a released rootfs shows in a new one: the plugin wrote to the image's layers")
	}
	sess.mustRelease(t, again.Key)
}

// checkNotFound checks that err says the key or id is unknown, as
// berth's reclaim tests for.
func checkNotFound(t *testing.T, call string, err error, also error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s succeeded; want an error that wraps plugin.ErrNotFound", call)
	case !errors.Is(err, plugin.ErrNotFound):
		t.Errorf("%s: %v; want an error that wraps plugin.ErrNotFound", call, err)
	case also != nil && !errors.Is(err, also):
		t.Errorf("%s: %v wraps plugin.ErrNotFound but not %v, which berth's reclaim tests for", call, err, also)
	}
}

func (k *storageKit) testReleaseTwice(t *testing.T) {
	sess := k.open(t)
	key := k.key("twice")
	sess.mustPrepare(t, key)
	sess.mustRelease(t, key)
	checkNotFound(t, fmt.Sprintf("the second Release(%q)", key), sess.release(callCtx(t), key), layerfs.ErrNotFound)
}

func (k *storageKit) testUnknownKey(t *testing.T) {
	sess := k.open(t)
	key := k.key("never-prepared")
	checkNotFound(t, fmt.Sprintf("Release(%q) of a key never prepared", key), sess.release(callCtx(t), key), layerfs.ErrNotFound)
}

func (k *storageKit) testInvalidKey(t *testing.T) {
	sess := k.open(t)
	for _, key := range []string{"", ".", "..", "../" + k.key("escape"), k.key("a/b"), "/" + k.key("abs"), k.key("nul\x00"), strings.Repeat("k", 129)} {
		rf, err := sess.s.Prepare(callCtx(t), key, k.img, nil)
		if err == nil {
			t.Errorf("Prepare(%q) succeeded (rootfs at %s); want an error", key, rf.Path)
			sess.s.Release(callCtx(t), key)
		}
	}
}

func (k *storageKit) testExistingKey(t *testing.T) {
	sess := k.open(t)
	key := k.key("existing")
	rf := sess.mustPrepare(t, key)
	checkWritable(t, rf, "kit-written", "first\n")
	_, err := sess.s.Prepare(callCtx(t), key, k.img, nil)
	switch {
	case err == nil:
		t.Fatalf("the second Prepare(%q) succeeded; want an error that wraps plugin.ErrExists", key)
	case !errors.Is(err, plugin.ErrExists):
		t.Errorf("the second Prepare(%q): %v; want an error that wraps plugin.ErrExists", key, err)
	case !errors.Is(err, layerfs.ErrExists):
		t.Errorf("the second Prepare(%q): %v wraps plugin.ErrExists but not layerfs.ErrExists", key, err)
	}
	// The rootfs in use is untouched.
	if got, err := os.ReadFile(filepath.Join(rf.Path, "kit-written")); err != nil || string(got) != "first\n" {
		t.Errorf("after a second Prepare(%q), the first rootfs's file reads %q, %v", key, got, err)
	}
	if !sess.listed(t, key) {
		t.Errorf("after a second Prepare(%q), List does not name it", key)
	}
	sess.mustRelease(t, key)
}

func (k *storageKit) testConcurrent(t *testing.T) {
	sess := k.open(t)
	n := k.opts.Concurrency
	keys := make([]string, n)
	rootfses := make([]*layerfs.Rootfs, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		keys[i] = k.key(fmt.Sprintf("conc-%d", i))
		wg.Go(func() { rootfses[i], errs[i] = sess.prepare(callCtx(t), keys[i], nil) })
	}
	wg.Wait()
	paths := map[string]string{}
	for i, err := range errs {
		if err != nil {
			t.Errorf("Prepare(%q), one of %d at once: %v", keys[i], n, err)
			continue
		}
		k.checkRootfs(t, keys[i], rootfses[i], func(id uint32) uint32 { return id })
		if prev, ok := paths[rootfses[i].Path]; ok {
			t.Errorf("%q and %q are prepared at the same path %s", prev, keys[i], rootfses[i].Path)
		}
		paths[rootfses[i].Path] = keys[i]
		checkWritable(t, rootfses[i], "kit-written", keys[i])
	}
	listed, err := sess.s.Rootfses(callCtx(t))
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for i, key := range keys {
		if errs[i] == nil && !slices.Contains(listed, key) {
			t.Errorf("List does not name %q, prepared with %d others at once", key, n-1)
		}
	}
	for i := range n {
		if errs[i] != nil {
			continue
		}
		wg.Go(func() {
			if err := sess.release(callCtx(t), keys[i]); err != nil {
				t.Errorf("Release(%q), one of %d at once: %v", keys[i], n, err)
			}
		})
	}
	wg.Wait()
}

// callTimeout bounds every call the kit makes, so that a plugin that
// hangs fails the check that met it, with the call named, rather than
// the whole test binary at go test's timeout.
const callTimeout = time.Minute

// callCtx is the context of one of the kit's calls.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// hangBound is how long a call whose context is done may take to return
// before the kit calls it hung. It is no performance figure: a plugin
// that honours its context returns in milliseconds.
const hangBound = 10 * time.Second

func (k *storageKit) testCancel(t *testing.T) {
	sess := k.open(t)
	// A context done before the call.
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, c := range []struct {
		name string
		ctx  context.Context
		want error
	}{{"cancelled", cancelled, context.Canceled}, {"expired", expired, context.DeadlineExceeded}} {
		key := k.key("cancel-" + c.name)
		_, err := sess.prepare(c.ctx, key, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("Prepare(%q) with a %s context: %v; want an error that wraps %v", key, c.name, err, c.want)
		}
		if err == nil {
			sess.release(callCtx(t), key)
		} else if sess.listed(t, key) {
			t.Errorf("Prepare(%q) with a %s context failed but left the key prepared", key, c.name)
		}
	}
	// Contexts cancelled in the middle of the call, at moments spread
	// over what a Prepare takes: each Prepare either succeeds or fails
	// with the context's error and leaves nothing.
	for i := range 8 {
		key := k.key(fmt.Sprintf("cancel-mid-%d", i))
		ctx, cancel := context.WithCancel(context.Background())
		var cancelledAt atomic.Int64 // UnixNano, set by the timer
		timer := time.AfterFunc(time.Duration(i)*time.Millisecond, func() { cancelledAt.Store(time.Now().UnixNano()); cancel() })
		_, err := sess.prepare(ctx, key, nil)
		returned := time.Now()
		timer.Stop()
		cancel()
		if err == nil {
			if err := sess.release(callCtx(t), key); err != nil {
				t.Errorf("Release(%q): %v", key, err)
			}
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Prepare(%q) cancelled in the middle: %v; want an error that wraps context.Canceled", key, err)
		}
		if at := cancelledAt.Load(); at != 0 && returned.Sub(time.Unix(0, at)) > hangBound {
			t.Errorf("Prepare(%q) returned %v after its context was cancelled: it does not honour its context", key, returned.Sub(time.Unix(0, at)))
		}
		// The plugin may still be at work on the call berth gave up on:
		// it must undo it by itself, soon.
		if !eventually(func() bool { return !sess.listed(t, key) }) {
			t.Errorf("Prepare(%q) was cancelled and failed, but left the key prepared", key)
		}
	}
}

func (k *storageKit) testRestart(t *testing.T) {
	sess := k.open(t)
	before := k.key("pre-crash")
	rf := sess.mustPrepare(t, before)
	checkWritable(t, rf, "kit-written", "before the crash\n")
	pid := sess.onlyPid(t)
	if err := kill9(pid); err != nil {
		t.Fatal(err)
	}
	after := k.key("post-crash")
	_, err := sess.prepare(callCtx(t), after, nil)
	if err != nil {
		if !errors.Is(err, plugin.ErrPluginExited) {
			t.Fatalf("Prepare(%q), the first call after kill -9 of the plugin: %v; want success or an error that wraps plugin.ErrPluginExited", after, err)
		}
		t.Logf("the first call after kill -9: %v", err)
		sess.release(callCtx(t), after) // whatever it did before it noticed
		if _, err := sess.prepare(callCtx(t), after, nil); err != nil {
			t.Fatalf("Prepare(%q), the second call after kill -9 of the plugin: %v; the plugin should have been started again", after, err)
		}
	}
	if now := sess.onlyPid(t); now == pid {
		t.Fatalf("the plugin's process %d still runs after kill -9", pid)
	}
	// What was prepared before the crash is still berth's to release.
	if !sess.listed(t, before) {
		t.Logf("the restarted plugin's List does not name %q, prepared before the crash; Release must still free it", before)
	}
	sess.mustRelease(t, before)
	sess.mustRelease(t, after)
}

// onlyPid returns the process of the session's plugin, which must be
// exactly one.
func (sess *storageSession) onlyPid(t *testing.T) int {
	t.Helper()
	return onlyPid(t, sess.pids(t))
}

func onlyPid(t *testing.T, pids []int) int {
	t.Helper()
	if len(pids) != 1 {
		t.Fatalf("plugintest: want one process of the plugin among the test's children, found %v", pids)
	}
	return pids[0]
}

func (k *storageKit) testKillMidPrepare(t *testing.T) {
	sess := k.open(t)
	pid := sess.onlyPid(t)
	n := k.opts.Concurrency
	keys := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	started := make(chan struct{})
	for i := range n {
		keys[i] = k.key(fmt.Sprintf("midcrash-%d", i))
		wg.Go(func() {
			if i == n/2 {
				close(started)
			}
			_, errs[i] = sess.prepare(callCtx(t), keys[i], nil)
		})
	}
	<-started
	if err := kill9(pid); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		failed++
		if !errors.Is(err, plugin.ErrPluginExited) {
			t.Errorf("Prepare(%q), in flight when the plugin was killed: %v; want success or an error that wraps plugin.ErrPluginExited", keys[i], err)
		}
	}
	t.Logf("%d of %d Prepares in flight failed when the plugin was killed", failed, n)
	// berth's reclaim releases every key of a sandbox it lost: each is
	// released or unknown, and then nothing may be left (checked as the
	// check ends).
	for _, key := range keys {
		err := sess.release(callCtx(t), key)
		if errors.Is(err, plugin.ErrPluginExited) {
			err = sess.release(callCtx(t), key)
		}
		if err != nil && !errors.Is(err, plugin.ErrNotFound) {
			t.Errorf("Release(%q) after the plugin was killed mid-prepare: %v", key, err)
		}
	}
}

// The user namespace the UserNS check prepares for maps ids 0-65535 to
// 100000-165535 on the host, as a sandbox's Default preset does.
const (
	userNSHostID = 100000
	userNSSize   = 65536
)

func (k *storageKit) testUserNS(t *testing.T) {
	sess := k.open(t)
	ns, err := newUserNS(userNSHostID, userNSSize)
	if err != nil {
		t.Fatalf("plugintest: %v", err)
	}
	defer ns.Close()
	m := []layerfs.IDMap{{ContainerID: 0, HostID: userNSHostID, Size: userNSSize}}
	key := k.key("userns")
	rf, err := sess.prepare(callCtx(t), key, &layerfs.PrepareOptions{UserNS: ns, UIDMap: m, GIDMap: m})
	if err != nil {
		if errors.Is(err, plugin.ErrUnsupported) && !sess.s.Info().Has(plugin.CapIDMap) {
			t.Skipf("the plugin has no capability %q and marks no mount for berth to idmap: %v", plugin.CapIDMap, err)
		}
		t.Fatalf("Prepare(%q) for a user namespace: %v", key, err)
	}
	k.checkRootfs(t, key, rf, func(id uint32) uint32 { return id + userNSHostID })
	var st syscall.Stat_t
	if err := syscall.Stat(rf.Path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != userNSHostID || st.Gid != userNSHostID {
		t.Errorf("the root of the rootfs of %q is owned by %d:%d on the host, want %d:%d (root of the namespace)", key, st.Uid, st.Gid, userNSHostID, userNSHostID)
	}
	sess.mustRelease(t, key)
}

func (k *storageKit) testClose(t *testing.T) {
	sess := k.open(t)
	key := k.key("close")
	sess.mustPrepare(t, key)
	sess.mustRelease(t, key)
	// finish closes the plugin and checks that its process is gone.
}

// dirEntries names what is in dir; a directory that does not exist is
// empty.
func dirEntries(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, err
}

// eventually reports whether cond holds now or comes to within
// hangBound, for what a plugin finishes after berth has returned (a call
// whose context ended while the plugin was at work on it).
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(hangBound)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (k *storageKit) testDiff(t *testing.T) {
	sess := k.open(t)
	if !sess.s.Info().Has(plugin.CapDiff) {
		t.Skipf("the plugin has no capability %q", plugin.CapDiff)
	}
	if !k.tiny {
		t.Skip("the Diff check changes files of the kit's own image, not of StorageOptions.Image")
	}
	key := k.key("diff")
	rf := sess.mustPrepare(t, key)
	checkWritable(t, rf, "kit-added", "added\n")
	if err := os.Remove(filepath.Join(rf.Path, keptFile)); err != nil {
		t.Fatalf("the rootfs of %q: remove one of the image's files: %v", key, err)
	}
	// A directory replaced by one of the same name hides what the image
	// had in it.
	home := filepath.Dir(ownedFile)
	if err := os.RemoveAll(filepath.Join(rf.Path, home)); err != nil {
		t.Fatalf("the rootfs of %q: remove one of the image's directories: %v", key, err)
	}
	if err := os.Mkdir(filepath.Join(rf.Path, home), 0o755); err != nil {
		t.Fatal(err)
	}
	checkWritable(t, rf, filepath.Join(home, "new"), "new\n")
	var buf bytes.Buffer
	if err := sess.s.Diff(callCtx(t), key, &buf); err != nil {
		t.Fatalf("Diff(%q): %v", key, err)
	}
	entries, err := tarEntries(&buf)
	if err != nil {
		t.Fatalf("Diff(%q) did not write a tar: %v", key, err)
	}
	if got, ok := entries["kit-added"]; !ok || got != "added\n" {
		t.Errorf("Diff(%q) lacks the file written in the rootfs (kit-added: %q, present %v); entries %q", key, got, ok, slices.Sorted(maps.Keys(entries)))
	}
	whiteout := filepath.Join(filepath.Dir(keptFile), ".wh."+filepath.Base(keptFile))
	if _, ok := entries[whiteout]; !ok {
		t.Errorf("Diff(%q) lacks the whiteout %s of the file removed from the rootfs; entries %q", key, whiteout, slices.Sorted(maps.Keys(entries)))
	}
	_, opaque := entries[filepath.Join(home, ".wh..wh..opq")]
	_, whited := entries[filepath.Join(home, ".wh."+filepath.Base(ownedFile))]
	if !opaque && !whited {
		t.Errorf("Diff(%q) does not hide what the image had in /%s, which was removed and made again: want %s/.wh..wh..opq or a whiteout of /%s; entries %q", key, home, home, ownedFile, slices.Sorted(maps.Keys(entries)))
	}
	if entries[filepath.Join(home, "new")] != "new\n" {
		t.Errorf("Diff(%q) lacks /%s/new, written in the rootfs", key, home)
	}
	for _, unchanged := range []string{releaseFile, shownFile, ownedFile, linkFile} {
		if _, ok := entries[unchanged]; ok {
			t.Errorf("Diff(%q) holds /%s, which the rootfs did not change: a diff holds only changes", key, unchanged)
		}
	}
	k.checkCommit(t, sess, key)
	sess.mustRelease(t, key)
	checkNotFound(t, fmt.Sprintf("Diff(%q) of a released key", key), sess.s.Diff(callCtx(t), key, io.Discard), nil)
}

// checkCommit commits key's rootfs, changed as testDiff changes it, and
// checks that berth's own store prepares the new image with the changes.
func (k *storageKit) checkCommit(t *testing.T, sess *storageSession, key string) {
	img, err := sess.s.Commit(callCtx(t), key, nil)
	if err != nil {
		t.Errorf("Commit(%q): %v", key, err)
		return
	}
	defer k.store.Remove(context.Background(), img.Digest.String())
	built := k.key("committed")
	rf, err := k.store.Prepare(callCtx(t), built, img, nil)
	if err != nil {
		t.Errorf("the image committed from %q does not prepare in berth's store: %v", key, err)
		return
	}
	defer k.store.Release(context.Background(), built)
	if b, err := os.ReadFile(filepath.Join(rf.Path, "kit-added")); err != nil || string(b) != "added\n" {
		t.Errorf("the image committed from %q lacks /kit-added, written in the rootfs: %q, %v", key, b, err)
	}
	for _, gone := range []string{keptFile, ownedFile} {
		if _, err := os.Lstat(filepath.Join(rf.Path, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the image committed from %q has /%s, removed from the rootfs (%v)", key, gone, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(rf.Path, releaseFile)); err != nil {
		t.Errorf("the image committed from %q lacks the image's /%s: %v", key, releaseFile, err)
	}
}

// The Quota check's quota, and what it writes: well under it, then well
// past it.
const (
	kitQuota = 16 << 20
	kitUnder = 4 << 20
	kitPast  = 64 << 20
)

func (k *storageKit) testQuota(t *testing.T) {
	sess := k.open(t)
	if !sess.s.Info().Has(plugin.CapQuota) {
		t.Skipf("the plugin has no capability %q", plugin.CapQuota)
	}
	key := k.key("quota")
	rf, err := sess.prepare(callCtx(t), key, &layerfs.PrepareOptions{DiskQuota: kitQuota})
	if err != nil {
		t.Fatalf("Prepare(%q) with a disk quota of %d bytes: %v", key, kitQuota, err)
	}
	k.checkRootfs(t, key, rf, func(id uint32) uint32 { return id })
	if n, err := fill(filepath.Join(rf.Path, "kit-under"), kitUnder); err != nil {
		t.Errorf("the rootfs of %q with a quota of %d bytes refused a write after %d of %d bytes: %v", key, kitQuota, n, kitUnder, err)
	}
	n, err := fill(filepath.Join(rf.Path, "kit-past"), kitPast)
	switch {
	case err == nil:
		t.Errorf("the rootfs of %q with a quota of %d bytes took %d bytes more", key, kitQuota, n)
	case !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT):
		t.Errorf("the rootfs of %q refused a write past its quota with %v; want ENOSPC or EDQUOT", key, err)
	}
	sess.mustRelease(t, key)
}

// fill writes size bytes to a new file at path, as a workload would, and
// returns how many it wrote.
func fill(path string, size int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	chunk := bytes.Repeat([]byte("plugintest quota "), 1<<16) // ~1 MiB, not sparse
	var n int64
	for n < size && err == nil {
		var m int
		m, err = f.Write(chunk[:min(int64(len(chunk)), size-n)])
		n += int64(m)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}
