package layerfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A Rootfs is a writable root filesystem prepared from an image.
type Rootfs struct {
	Key    string  // the caller's name for it, unique in the store
	Path   string  // the directory to use as the root
	Image  v1.Hash // manifest digest of the image it was made from
	Driver string  // "overlay" or "copy", which may differ from the store's (see PrepareOptions)
}

// rootfsRecord is written before anything is mounted, so that a crash at
// any later point leaves enough on disk to undo it.
type rootfsRecord struct {
	Image   v1.Hash   `json:"image"`
	Layers  []v1.Hash `json:"layers"` // diff IDs, bottom first
	Driver  string    `json:"driver"`
	Path    string    `json:"path"`
	Created time.Time `json:"created"`
	// UIDMap and GIDMap are those of the user namespace the rootfs was
	// made for, if any, by which Diff maps owners back. (Undoing the
	// idmapped mounts needs nothing recorded: they are on fixed paths in
	// the driver's directory.)
	UIDMap []IDMap `json:"uidMap,omitempty"`
	GIDMap []IDMap `json:"gidMap,omitempty"`
	// Quota is the disk quota of the state directory, if it has one.
	Quota *diskQuota `json:"quota,omitempty"`
}

var keyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (s *Store) rootfsDir(key string) string { return s.path("rootfs", key) }

// Prepare makes a writable root filesystem from img under key, on top of
// the image's shared read-only layers: an overlay mount where the store's
// filesystem allows one, a private copy elsewhere. opts may ask for it to
// show the files to a user namespace; nil prepares it for the host's ids.
// Release undoes it.
func (s *Store) Prepare(ctx context.Context, key string, img *Image, opts *PrepareOptions) (*Rootfs, error) {
	if !keyRE.MatchString(key) {
		return nil, fmt.Errorf("prepare: rootfs key %q: must be 1-128 letters, digits, '.', '_' or '-'", key)
	}
	ids, err := opts.idMapping()
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	quota, err := opts.diskQuota()
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	d, err := s.rootfsDriver()
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	l, err := s.use(ctx)
	if err != nil {
		return nil, err
	}
	defer l.unlock()

	rec := rootfsRecord{Image: img.Digest, Driver: d.Name(), Created: time.Now().UTC()}
	if ids != nil {
		rec.UIDMap, rec.GIDMap = ids.uids, ids.gids
	}
	lowers := make([]string, len(img.Layers))
	for i, layer := range img.Layers {
		dir := s.layerDir(layer.DiffID)
		if !exists(dir) {
			return nil, fmt.Errorf("prepare %s: layer %s of image %s: %w", key, layer.DiffID, img.Digest, ErrNotFound)
		}
		rec.Layers = append(rec.Layers, layer.DiffID)
		lowers[len(lowers)-1-i] = dir
	}
	if lowers, err = visibleLayers(lowers); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	dir := s.rootfsDir(key)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("prepare: rootfs %q: %w", key, ErrExists)
		}
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	state := s.path("rootfs", key, "state")
	err = os.Mkdir(state, 0o700)
	if err == nil && quota != nil {
		rec.Quota = quota
		err = s.quotaBackend(quota, dir, ids != nil)
	}
	if err == nil {
		b, _ := json.Marshal(rec)
		err = writeFileAtomic(s.path("rootfs", key, "rootfs.json"), b, false)
	}
	if err == nil && quota != nil {
		// A filesystem of the rootfs's own is mounted on state, so the
		// namespace must be let into its root, below.
		err = s.applyQuota(ctx, quota, dir, state)
	}
	if err == nil && ids != nil {
		err = letNamespaceIn(ids, dir, state)
	}
	var path string
	mount := func() (err error) {
		m := func() (err error) {
			path, err = d.Mount(ctx, lowers, state, ids)
			return err
		}
		// Quotas bind only a writer without CAP_SYS_RESOURCE: the copy
		// driver's copy of the image, and everything a workload writes
		// through an overlay (made with its mounter's credentials), must be
		// made so where the store's filesystem enforces any (the rootfs's
		// project quota, or an administrator's). Elsewhere nothing is left
		// to bypass (a loop filesystem has no quotas and reserves no blocks
		// for root), and the start path is spared a new OS thread.
		if _, any := s.fsQuotas(); any {
			return withoutResourceCap(m)
		}
		return m()
	}
	if err == nil {
		err = mount()
	}
	if errors.Is(err, ErrIDMapUnsupported) {
		d, err = s.prepareFallback(ctx, key, d, state, err, &rec)
		if err == nil {
			err = mount()
		}
	}
	if err != nil && quota != nil && d.Name() == "copy" && quotaFull(err) {
		err = fmt.Errorf("%w: the disk quota of %d bytes and %d inodes is too small for a copy of the image, which counts against it with the copy driver", err, quota.Bytes, quota.Inodes)
	}
	if err == nil {
		rec.Path = path
		b, _ := json.Marshal(rec)
		err = writeFileAtomic(s.path("rootfs", key, "rootfs.json"), b, false)
	}
	if err != nil {
		uerr := d.Unmount(context.WithoutCancel(ctx), state)
		if uerr == nil && quota != nil && quota.Backend != "" {
			uerr = s.removeQuota(quota, dir, state)
		}
		if uerr != nil {
			s.log.Error("undo failed prepare", "key", key, "err", uerr)
			return nil, fmt.Errorf("prepare %s: %w (and undoing it: %v)", key, err, uerr)
		}
		os.RemoveAll(dir)
		return nil, fmt.Errorf("prepare %s: %w", key, err)
	}
	return &Rootfs{Key: key, Path: path, Image: img.Digest, Driver: d.Name()}, nil
}

// letNamespaceIn lets root of the user namespace that ids describe, an
// ordinary id on the host, search dirs on its way to the rootfs, which the
// sandbox's init mounts from inside the namespace: their group becomes the
// host gid of the namespace's root group, with search permission only, and
// other ids on the host stay out.
func letNamespaceIn(ids *idMapping, dirs ...string) error {
	for _, d := range dirs {
		if err := os.Lchown(d, 0, int(ids.hostGID(0))); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o710); err != nil {
			return err
		}
	}
	return nil
}

// prepareFallback undoes what driver d did in state before failing with
// cause, an ErrIDMapUnsupported, and records that the rootfs under key is
// to be copied instead. It returns the driver to undo state with, should
// it fail.
func (s *Store) prepareFallback(ctx context.Context, key string, d driver, state string, cause error, rec *rootfsRecord) (driver, error) {
	if s.idmapWarned.CompareAndSwap(false, true) {
		s.log.Warn("cannot show image layers to a user namespace through idmapped mounts; copying each image with shifted owners instead", "key", key, "err", cause)
	} else {
		s.log.Debug("idmapped mounts unsupported; copying the image", "key", key, "err", cause)
	}
	if err := d.Unmount(context.WithoutCancel(ctx), state); err != nil {
		return d, fmt.Errorf("%w (and undoing it: %w)", cause, err)
	}
	// The record says which driver to undo with after a crash, so it must
	// name the copy driver before that driver makes anything.
	rec.Driver = "copy"
	b, _ := json.Marshal(rec)
	if err := writeFileAtomic(s.path("rootfs", key, "rootfs.json"), b, false); err != nil {
		return d, err
	}
	return &copyDriver{log: s.log}, nil
}

// readRootfs reads the record of the rootfs under key. A rootfs without
// one, which a Prepare killed before writing it leaves, gives the zero
// record, whose Driver is empty: every record Prepare writes names one.
func (s *Store) readRootfs(key string) (rootfsRecord, error) {
	var rec rootfsRecord
	if !keyRE.MatchString(key) {
		return rec, fmt.Errorf("rootfs key %q: %w", key, ErrNotFound)
	}
	b, err := os.ReadFile(s.path("rootfs", key, "rootfs.json"))
	if err != nil {
		if isNotExist(err) {
			if exists(s.rootfsDir(key)) {
				return rec, nil // crashed before the record was written: nothing mounted
			}
			return rec, fmt.Errorf("rootfs %q: %w", key, ErrNotFound)
		}
		return rec, damaged(key, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, damaged(key, fmt.Errorf("rootfs.json: %w", err))
	}
	return rec, nil
}

// lowers returns the layer directories a rootfs shows, top first.
func (s *Store) lowers(rec rootfsRecord) ([]string, error) {
	out := make([]string, len(rec.Layers))
	for i, id := range rec.Layers {
		out[len(out)-1-i] = s.layerDir(id)
	}
	return visibleLayers(out)
}

// driverFor returns the driver a rootfs was made with, which may differ
// from the one the store would pick today.
func (s *Store) driverFor(rec rootfsRecord) (driver, error) {
	if rec.Driver == "" {
		return s.rootfsDriver()
	}
	return newDriver(rec.Driver, s.path("tmp"), "", s.log)
}

// Release unmounts and deletes the rootfs prepared under key, with every
// change made in it. It also cleans up after a Prepare that was cut short.
func (s *Store) Release(ctx context.Context, key string) error {
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	rec, err := s.readRootfs(key)
	if err == nil && rec.Driver == "" {
		// No record (see readRootfs): Prepare writes it before it
		// mounts anything, so nothing should be mounted; but the
		// record may also have been lost since, with the rootfs
		// mounted.
		err = damaged(key, errors.New("no rootfs.json, or one that names no driver"))
	}
	if errors.Is(err, ErrDamagedRecord) {
		if err := s.releaseDamaged(key, err); err != nil {
			return fmt.Errorf("release %s (record damaged): %w", key, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	d, err := s.driverFor(rec)
	if err != nil {
		// A record that names no driver berth has is as good as none.
		if err := s.releaseDamaged(key, damaged(key, err)); err != nil {
			return fmt.Errorf("release %s (record damaged): %w", key, err)
		}
		return nil
	}
	state := s.path("rootfs", key, "state")
	if err := d.Unmount(ctx, state); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	if rec.Quota != nil {
		if err := s.removeQuota(rec.Quota, s.rootfsDir(key), state); err != nil {
			return fmt.Errorf("release %s: %w", key, err)
		}
	}
	if n, err := s.sweepRootfs(key); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	} else if n > 0 {
		s.log.Warn("released a rootfs whose record did not name all its mounts", "key", key, "unmounted", n)
	}
	return nil
}

// Rootfses returns the keys of every prepared rootfs.
func (s *Store) Rootfses(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.path("rootfs"))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(entries))
	for _, e := range entries {
		keys = append(keys, e.Name())
	}
	return keys, nil
}

// Diff writes what has changed in the rootfs under key, relative to its
// image, to w as an OCI layer tar (uncompressed): files added or changed
// in full, deletions as whiteouts.
func (s *Store) Diff(ctx context.Context, key string, w io.Writer) error {
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	return s.diff(ctx, key, w)
}

func (s *Store) diff(ctx context.Context, key string, w io.Writer) error {
	rec, err := s.readRootfs(key)
	if err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	if rec.Path == "" {
		return fmt.Errorf("diff: rootfs %q was never fully prepared: %w", key, ErrNotFound)
	}
	d, err := s.driverFor(rec)
	if err != nil {
		return fmt.Errorf("diff %s: %w", key, err)
	}
	lowers, err := s.lowers(rec)
	if err != nil {
		return fmt.Errorf("diff %s: %w", key, err)
	}
	if err := d.Changes(ctx, lowers, s.path("rootfs", key, "state"), mappingOf(rec), w); err != nil {
		return fmt.Errorf("diff %s: %w", key, err)
	}
	return nil
}

// CommitOptions describe the image Commit makes.
type CommitOptions struct {
	Name    string // tags the new image; empty leaves it untagged
	Comment string // recorded in the new layer's history entry
	Author  string
	// CreatedBy is the history entry's created_by, such as the
	// Dockerfile instruction that made the layer; empty means
	// "berth commit".
	CreatedBy string
	// Config, if set, replaces the runtime configuration (Cmd,
	// Entrypoint, Env, ...) the new image inherits from its parent.
	Config *v1.Config
	// MountPoints are paths in the rootfs that a runtime mounted over,
	// such as /proc or /etc/hosts. Where the diff holds one of them as a
	// directory or an empty file, it is the runtime's stub, made for one
	// run, and left out of the layer; the directories made to hold it
	// stay.
	MountPoints []string
}

// Commit saves what changed in the rootfs under key as a new gzipped layer
// on top of its image's layers, and stores the result as a new image whose
// config is the old one with that layer added.
func (s *Store) Commit(ctx context.Context, key string, opts *CommitOptions) (*Image, error) {
	if opts == nil {
		opts = &CommitOptions{}
	}
	names, err := nameList(opts.Name, "a commit name")
	if err != nil {
		return nil, err
	}
	l, err := s.use(ctx)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	rec, err := s.readRootfs(key)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	parent, err := s.readImage(rec.Image)
	if err != nil {
		return nil, fmt.Errorf("commit %s: base image: %w", key, err)
	}

	// What the sandbox wrote is already on disk within its own quota:
	// only the store's reserve of free space bounds copying it.
	diff := func(ctx context.Context, w io.Writer) error { return s.diff(ctx, key, w) }
	return s.commitLayer(ctx, parent, "commit "+key, diff, opts, names)
}
