package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// DefaultMountDir is where berth mounts the rootfses storage plugins
// prepare unless Options.MountDir says otherwise.
const DefaultMountDir = "/run/berth/plugin-rootfs"

// releaseTimeout bounds the Release berth sends a plugin to undo a
// Prepare that failed, whose caller's context may be over already.
const releaseTimeout = 30 * time.Second

// keyRE is the rule for rootfs keys and sandbox IDs alike, layerfs's and
// netplug's: either names a directory or a file.
var keyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Storage is a storage plugin seen from the host: it satisfies
// sandbox.Storage, and Recover's lister of rootfses. Images and volumes
// are the store's (Options.Store); rootfses are the plugin's, checked and
// mounted by berth under Options.MountDir. Its methods are safe for
// concurrent use.
type Storage struct {
	c         *client
	store     *layerfs.Store
	storeRoot string    // the store's root, symlinks resolved
	dir       string    // MountDir/<plugin id>: one directory per key
	denied    forbidden // where no root and no mount source may be
	settings  map[string]string
	log       *slog.Logger

	// noAppend records that the kernel's overlayfs lacks "lowerdir+";
	// legacyOverlay pretends it does, for tests.
	noAppend      atomic.Bool
	legacyOverlay bool
}

// OpenStorage starts the storage plugin at path and returns it ready for
// sandboxes. It refuses a plugin whose roots break berth's rules (see
// SECURITY.md) with an error wrapping ErrRefused. Close stops it.
func OpenStorage(ctx context.Context, path string, opts *Options) (*Storage, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := o.MountDir
	if base == "" {
		base = DefaultMountDir
	}
	if !filepath.IsAbs(base) || filepath.Clean(base) != base {
		return nil, fmt.Errorf("plugin %s: MountDir %s must be an absolute, clean path", path, clip.Quote(base))
	}
	runDir := o.RunDir
	if runDir == "" {
		runDir = defaultRunDir
	}
	store := o.Store
	if store == nil {
		var err error
		if store, err = layerfs.Open(layerfs.DefaultRoot(), &layerfs.Options{Logger: log}); err != nil {
			return nil, err
		}
	}
	// berth opens every path of an answer without following symlinks, the
	// layer directories it gave too: it gives them by the store's real
	// path, should the store's own have a symlink in it.
	storeRoot, err := filepath.EvalSymlinks(store.Root())
	if err != nil {
		return nil, fmt.Errorf("plugin %s: store: %w", path, err)
	}
	// Root of a sandbox's user namespace, an ordinary id on the host,
	// must reach its rootfs through these: searchable, not listable.
	// The plugin's own directory is made only once the plugin has
	// started, so that a program that is not one leaves nothing here.
	mkdir := func(d string) error {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("plugin %s: %w", path, err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("plugin %s: %w", path, err)
		}
		return nil
	}
	if err := mkdir(base); err != nil {
		return nil, err
	}
	dir := filepath.Join(base, pluginID(path))
	// berth opens its own mount points without following symlinks too.
	realBase, err := filepath.EvalSymlinks(base)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	s := &Storage{
		store:     store,
		storeRoot: storeRoot,
		dir:       filepath.Join(realBase, filepath.Base(dir)),
		denied: forbidden{
			dirs: append(append([]string(nil), deniedDirs...),
				base, realBase, filepath.Clean(runDir), store.Root(), storeRoot),
			except: []string{filepath.Join(store.Root(), storePluginsDir), filepath.Join(storeRoot, storePluginsDir)},
		},
		settings: maps.Clone(o.Settings),
		log:      log.With("plugin", filepath.Base(path)),
	}
	c, err := newClient(path, KindStorage, opts)
	if err != nil {
		return nil, err
	}
	// sandbox.Storage's callers test for layerfs's sentinels.
	c.alias(ErrNotFound, layerfs.ErrNotFound)
	c.alias(ErrExists, layerfs.ErrExists)
	if _, err := c.conn(ctx); err != nil {
		c.close()
		return nil, err
	}
	if err := checkRoots(c.Info().Roots, s.denied); err != nil {
		c.close()
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	if err := mkdir(dir); err != nil {
		c.close()
		return nil, err
	}
	s.c = c
	return s, nil
}

// pluginID names a plugin's directory under MountDir: the binary's name,
// for people, and a hash of its path, so that two plugins of one name
// never share one.
func pluginID(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	name := strings.Map(func(r rune) rune {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.') {
			return r
		}
		return '_'
	}, filepath.Base(path))
	if len(name) > 64 {
		name = name[:64]
	}
	sum := sha256.Sum256([]byte(path))
	return name + "-" + hex.EncodeToString(sum[:6])
}

// Info describes the plugin.
func (s *Storage) Info() Info { return s.c.Info() }

// Store returns the store images and volumes come from.
func (s *Storage) Store() *layerfs.Store { return s.store }

// Image resolves ref in the store.
func (s *Storage) Image(ctx context.Context, ref string) (*layerfs.Image, error) {
	return s.store.Image(ctx, ref)
}

// Volume returns the directory of the store's volume name, creating it if
// need be, so that sandboxes on a plugin's rootfs still have named
// volumes.
func (s *Storage) Volume(ctx context.Context, name string) (string, error) {
	return s.store.Volume(ctx, name)
}

// Close stops the plugin; the rootfses it made stay, and a Storage opened
// on the same plugin later releases them. The plugin's directory under
// MountDir goes if no rootfs is left in it, so that plugins run once (a
// test's, from a temporary path) leave nothing behind.
func (s *Storage) Close() error {
	err := s.c.close()
	os.Remove(s.dir) // fails, as it should, while a rootfs is in it
	return err
}

func (s *Storage) keyDir(key string) string { return filepath.Join(s.dir, key) }

// realPath returns p, a path in the store, by the store's real root.
func (s *Storage) realPath(p string) string {
	rel, err := filepath.Rel(s.store.Root(), p)
	if err != nil {
		return p
	}
	return filepath.Join(s.storeRoot, rel)
}

// A rootfsRecord is written in a rootfs's directory before berth asks the
// plugin for it, so that after a crash at any later point Rootfses names
// it and Release undoes it. What Release unmounts it finds in mountinfo.
type rootfsRecord struct {
	Plugin  string    `json:"plugin"`
	Image   string    `json:"image"`
	Created time.Time `json:"created"`
}

const recordFile = "record.json"

// Prepare asks the plugin for a rootfs for key, checks its answer and
// performs its mounts. A mount berth refuses, or one the kernel refuses,
// fails it with an error wrapping ErrRefused that names the mount and the
// rule; berth then unmounts what it mounted and has the plugin release
// what it made.
func (s *Storage) Prepare(ctx context.Context, key string, img *layerfs.Image, opts *layerfs.PrepareOptions) (*layerfs.Rootfs, error) {
	if !keyRE.MatchString(key) {
		return nil, fmt.Errorf("prepare: rootfs key %s: must be 1-128 letters, digits, '.', '_' or '-': %w", clip.Quote(key), ErrInvalid)
	}
	if img == nil {
		return nil, fmt.Errorf("prepare %s: no image: %w", key, ErrInvalid)
	}
	_, info, err := s.live(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	req, userns, err := s.request(key, img, opts, info)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	dir := s.keyDir(key)
	err = os.Mkdir(dir, 0o700)
	if errors.Is(err, os.ErrNotExist) {
		// Another Storage on this plugin, in another process, closed
		// and removed the plugin's empty directory.
		if err = os.Mkdir(s.dir, 0o711); err == nil || errors.Is(err, os.ErrExist) {
			err = os.Mkdir(dir, 0o700)
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("prepare: rootfs %s: %w", clip.Quote(key), errBothExists)
		}
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	rec, _ := json.Marshal(rootfsRecord{Plugin: info.Path, Image: img.Digest.String(), Created: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(dir, recordFile), rec, 0o600); err != nil {
		s.removeKeyDir(dir)
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	if len(req.GIDMap) > 0 {
		// The sandbox's init reaches the rootfs from inside the namespace,
		// whoever shifts the owners.
		if err := letNamespaceIn(dir, layerfs.HostID(req.GIDMap, 0)); err != nil {
			s.removeKeyDir(dir)
			return nil, fmt.Errorf("prepare %s: %w", key, err)
		}
	}

	// The store's GC must not take the layers from under the rootfs.
	if err := s.store.Hold(ctx, s.holdName(key), img.Layers); err != nil {
		s.removeKeyDir(dir)
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	res, info, err := s.callPrepare(ctx, req)
	if err != nil {
		// The plugin may have made the rootfs before the call failed (a
		// cancelled or cut call), but one that says it exists already is
		// not this call's to release.
		return nil, s.undoPrepare(key, dir, !errors.Is(err, ErrExists), fmt.Errorf("prepare %s: %w", key, err))
	}
	path, driver, err := s.mount(ctx, dir, req, res, userns, info)
	if err != nil {
		if errors.Is(err, ErrRefused) {
			// A plugin answering what berth refuses is buggy or hostile:
			// whoever runs it should hear of it, not only the caller.
			s.log.Warn("refused a storage plugin's answer", "key", key, "err", err)
		}
		return nil, s.undoPrepare(key, dir, true, fmt.Errorf("prepare %s: plugin %s: %w", key, s.c.name, err))
	}
	return &layerfs.Rootfs{Key: key, Path: path, Image: img.Digest, Driver: driver}, nil
}

// request checks the caller's options against what the plugin can do and
// builds the request, with the user namespace berth is to idmap by, if
// any.
func (s *Storage) request(key string, img *layerfs.Image, opts *layerfs.PrepareOptions, info Info) (*PrepareRequest, *os.File, error) {
	var o layerfs.PrepareOptions
	if opts != nil {
		o = *opts
	}
	req := &PrepareRequest{Key: key, ImageDigest: img.Digest.String(), Options: maps.Clone(s.settings)}
	if o.DiskQuota < 0 || o.DiskInodes < 0 {
		return nil, nil, fmt.Errorf("negative disk quota: %w", ErrInvalid)
	}
	if o.DiskQuota != 0 || o.DiskInodes != 0 {
		if !info.Has(CapQuota) {
			return nil, nil, fmt.Errorf("plugin %s cannot enforce a disk quota (no capability %q): %w", s.c.name, CapQuota, ErrUnsupported)
		}
		req.DiskQuota, req.DiskInodes = o.DiskQuota, o.DiskInodes
	}
	var userns *os.File
	if o.UserNS != nil {
		typ, err := unix.IoctlRetInt(int(o.UserNS.Fd()), unix.NS_GET_NSTYPE)
		if err != nil || typ != unix.CLONE_NEWUSER {
			return nil, nil, fmt.Errorf("UserNS %s is not a user namespace: %w", o.UserNS.Name(), ErrInvalid)
		}
		if len(o.UIDMap) == 0 || len(o.GIDMap) == 0 {
			return nil, nil, fmt.Errorf("a UserNS needs its UIDMap and GIDMap: %w", ErrInvalid)
		}
		req.UIDMap, req.GIDMap = o.UIDMap, o.GIDMap
		if !info.Has(CapIDMap) {
			userns = o.UserNS
		}
	} else if len(o.UIDMap) > 0 || len(o.GIDMap) > 0 {
		return nil, nil, fmt.Errorf("UIDMap and GIDMap need a UserNS: %w", ErrInvalid)
	}
	layers, err := s.store.VisibleLayers(img)
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", img.Digest, err)
	}
	for _, l := range layers {
		req.Layers = append(req.Layers, Layer{
			Digest: l.Digest.String(), DiffID: l.DiffID.String(), MediaType: string(l.MediaType), Size: l.Size,
			UnpackedPath: s.realPath(s.store.LayerDir(l.DiffID)), BlobPath: s.realPath(s.store.BlobPath(l.Digest)),
		})
	}
	return req, userns, nil
}

// live returns a connection to the running plugin and what that process
// announced (its capabilities and roots), starting it if need be. The
// two go together: while the plugin restarts, Info describes no process.
func (s *Storage) live(ctx context.Context) (*grpc.ClientConn, Info, error) {
	for {
		cc, err := s.c.conn(ctx)
		if err != nil {
			return nil, Info{}, err
		}
		if info := s.c.Info(); info.Kind != "" {
			return cc, info, nil
		}
		// It died between the two: conn starts another.
		if err := ctx.Err(); err != nil {
			return nil, Info{}, err
		}
	}
}

// callPrepare sends req to the plugin, and returns its answer with what
// the process that answered announced, which the answer is checked
// against.
func (s *Storage) callPrepare(ctx context.Context, req *PrepareRequest) (*PrepareResult, Info, error) {
	cc, info, err := s.live(ctx)
	if err != nil {
		return nil, info, err
	}
	resp, err := pb.NewStorageServiceClient(cc).Prepare(ctx, prepareRequestToPB(req))
	if err != nil {
		return nil, info, s.c.callErr(err)
	}
	return prepareResultFromPB(resp), info, nil
}

// mount checks the plugin's answer res to req and performs it in dir.
func (s *Storage) mount(ctx context.Context, dir string, req *PrepareRequest, res *PrepareResult, userns *os.File, info Info) (path, driver string, err error) {
	if err := checkRoots(info.Roots, s.denied); err != nil {
		return "", "", err
	}
	driver = res.Driver
	if driver == "" {
		driver = "plugin"
	}
	if len(driver) > maxDriverName || strings.IndexFunc(driver, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) >= 0 {
		return "", "", fmt.Errorf("driver name %s: want at most %d printable ASCII characters: %w", clip.Quote(driver), maxDriverName, ErrRefused)
	}
	rules := mountRules{roots: info.Roots, layers: map[string]bool{}, denied: s.denied}
	for _, l := range req.Layers {
		rules.layers[l.UnpackedPath] = true
	}
	checked, err := rules.checkMounts(res.Mounts)
	if err != nil {
		return "", "", err
	}
	if userns != nil && !slices.ContainsFunc(checked, func(c checkedMount) bool { return c.idmap }) {
		return "", "", fmt.Errorf("the sandbox has a user namespace, and the plugin neither shifts owners itself (capability %q) nor marks a mount for berth to idmap: %w", CapIDMap, ErrUnsupported)
	}
	m := mounter{dir: dir, userns: userns, uids: req.UIDMap, gids: req.GIDMap, legacy: s.legacyOverlay, noAppend: &s.noAppend}
	path, err = m.mountAll(ctx, checked)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, ErrRefused) && !errors.Is(err, layerfs.ErrIDMapUnsupported) {
			err = fmt.Errorf("%w: %w", err, ErrRefused)
		}
		return "", "", err
	}
	return path, driver, nil
}

// undoPrepare undoes a Prepare that failed with cause: it unmounts what
// berth mounted in dir, removes dir and, if release, has the plugin
// release key, and returns cause with whatever of that failed.
func (s *Storage) undoPrepare(key, dir string, release bool, cause error) error {
	if err := s.unmountKeyDir(dir); err != nil {
		s.log.Error("undo a failed prepare: berth's mounts stay", "key", key, "err", err)
		return fmt.Errorf("%w (and undoing it: %v)", cause, err)
	}
	if !release {
		return cause
	}
	// The caller's context may be what failed: the plugin still gets a
	// bounded chance to free what it made.
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	if err := s.callRelease(ctx, key); err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("undo a failed prepare: the plugin's release failed", "key", key, "err", err)
		return fmt.Errorf("%w (and the plugin's release: %v)", cause, err)
	}
	if err := s.store.Unhold(ctx, s.holdName(key)); err != nil {
		return fmt.Errorf("%w (and undoing it: %v)", cause, err)
	}
	return cause
}

// unmountKeyDir detaches every mount in dir and removes it.
func (s *Storage) unmountKeyDir(dir string) error {
	n, err := unmountUnder(dir)
	if n > 0 {
		s.log.Debug("unmounted a plugin's rootfs", "dir", dir, "mounts", n)
	}
	if err != nil {
		return err
	}
	return s.removeKeyDir(dir)
}

// removeKeyDir removes what berth made in dir, once nothing is mounted
// there: never recursively, so that a mount left behind fails it rather
// than lets berth delete what is mounted.
func (s *Storage) removeKeyDir(dir string) error {
	var errs []error
	rm := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	rm(filepath.Join(dir, recordFile))
	rm(filepath.Join(dir, "rootfs"))
	idmapped := filepath.Join(dir, "idmapped")
	if entries, err := os.ReadDir(idmapped); err == nil {
		for _, e := range entries {
			rm(filepath.Join(idmapped, e.Name()))
		}
	}
	rm(idmapped)
	rm(dir)
	return errors.Join(errs...)
}

// letNamespaceIn lets root of a sandbox's user namespace, whose group is
// the host's gid, search dir on its way to the rootfs; others on the host
// stay out.
func letNamespaceIn(dir string, gid uint32) error {
	if err := os.Lchown(dir, 0, int(gid)); err != nil {
		return err
	}
	return os.Chmod(dir, 0o710)
}

// Release unmounts key's rootfs, removes berth's directory of it and has
// the plugin free it. A key that neither berth nor the plugin knows is an
// error wrapping ErrNotFound and layerfs.ErrNotFound, which sandbox's
// reclaim tolerates. It also undoes a Prepare cut short by a crash of the
// host, from berth's record.
func (s *Storage) Release(ctx context.Context, key string) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("release: rootfs key %s: %w", clip.Quote(key), errBothNotFound)
	}
	dir := s.keyDir(key)
	_, statErr := os.Lstat(dir)
	local := statErr == nil
	if local {
		if err := s.unmountKeyDir(dir); err != nil {
			return fmt.Errorf("release %s: %w", key, err)
		}
	}
	err := s.callRelease(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("release %s: %w", key, err)
	}
	// Nothing uses the layers any more.
	if uerr := s.store.Unhold(ctx, s.holdName(key)); uerr != nil {
		return fmt.Errorf("release %s: %w", key, uerr)
	}
	if err != nil && !local {
		return fmt.Errorf("release %s: %w", key, err)
	}
	// berth had it and has undone its part; a plugin that did not know
	// it lost it, or never made it before a crash.
	return nil
}

// holdName names the store's hold on the layers of key's rootfs.
func (s *Storage) holdName(key string) string {
	return "plugin-" + filepath.Base(s.dir) + "." + key
}

// callRelease has the plugin release key.
func (s *Storage) callRelease(ctx context.Context, key string) error {
	cc, err := s.c.conn(ctx)
	if err != nil {
		return err
	}
	_, err = pb.NewStorageServiceClient(cc).Release(ctx, &pb.ReleaseRequest{Key: key})
	return s.c.callErr(err)
}

// Rootfses lists the keys of the rootfses the plugin holds and those berth
// has a record of, for Recover. If the plugin cannot be asked, it returns
// berth's with the error.
func (s *Storage) Rootfses(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var keys []string
	add := func(k string) {
		if keyRE.MatchString(k) && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			add(e.Name())
		}
	}
	cc, err := s.c.conn(ctx)
	if err != nil {
		return keys, err
	}
	resp, err := pb.NewStorageServiceClient(cc).List(ctx, &pb.StorageServiceListRequest{})
	if err != nil {
		return keys, fmt.Errorf("list rootfses: %w", s.c.callErr(err))
	}
	for _, k := range resp.GetKeys() {
		if !keyRE.MatchString(k) {
			s.log.Warn("the plugin lists a key berth would never have given it", "key", clip.Quote(k))
			continue
		}
		add(k)
	}
	return keys, nil
}

// Diff writes the changes made in key's rootfs since Prepare to w as an
// uncompressed OCI layer tar, from a plugin with capability "diff"; for
// others it fails with ErrUnsupported.
func (s *Storage) Diff(ctx context.Context, key string, w io.Writer) error {
	if !keyRE.MatchString(key) {
		return fmt.Errorf("diff: rootfs key %s: %w", clip.Quote(key), errBothNotFound)
	}
	cc, info, err := s.live(ctx)
	if err != nil {
		return fmt.Errorf("diff %s: %w", key, err)
	}
	if !info.Has(CapDiff) {
		return fmt.Errorf("diff %s: plugin %s cannot diff (no capability %q): %w", key, s.c.name, CapDiff, ErrUnsupported)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if w fails
	stream, err := pb.NewStorageServiceClient(cc).Diff(ctx, &pb.DiffRequest{Key: key})
	if err != nil {
		return s.diffErr(key, err)
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return s.diffErr(key, err)
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return fmt.Errorf("diff %s: %w", key, err)
		}
	}
}

func (s *Storage) diffErr(key string, err error) error {
	return fmt.Errorf("diff %s: %w", key, s.c.callErr(err))
}

// alsoErr is err that also matches another sentinel, without repeating
// that sentinel's text.
type alsoErr struct {
	error
	also error
}

func (e alsoErr) Unwrap() []error { return []error{e.error, e.also} }

// Errors that match both plugin's and layerfs's sentinels, as callers of
// a sandbox.Storage test for layerfs's.
var (
	errBothNotFound = alsoErr{ErrNotFound, layerfs.ErrNotFound}
	errBothExists   = alsoErr{ErrExists, layerfs.ErrExists}
)
