package sandbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/layerfs"
)

// CommitOptions describe the image Commit makes.
type CommitOptions struct {
	Author  string // recorded in the config and the new layer's history
	Message string // the history entry's comment
	// CreatedBy is the history entry's created_by, such as the
	// Dockerfile instruction that made the layer; empty means
	// "berth commit".
	CreatedBy string
	// Config, if set, replaces the image's runtime configuration (Cmd,
	// Entrypoint, Env, WorkingDir, User, ExposedPorts, Labels, ...) in
	// the new image; nil keeps the sandbox's image's.
	Config *v1.Config
	// NoPause commits a running sandbox without freezing it first. By
	// default its processes are frozen while the diff is read, so that
	// the layer is one consistent moment of the rootfs.
	NoPause bool
}

// A committer is storage that can store a rootfs's changes as an image:
// *layerfs.Store and *plugin.Storage are.
type committer interface {
	Commit(ctx context.Context, key string, opts *layerfs.CommitOptions) (*layerfs.Image, error)
}

// thawTimeout bounds the thaw that ends a commit, which must happen even
// when the caller's context has ended.
const thawTimeout = 10 * time.Second

// Commit stores what the sandbox changed in its rootfs as a new layer on
// top of its image, and the result as a new image tagged name (empty for
// none). The sandbox may be running (started here, from a Pool, or found
// by Open), or have exited with Options.KeepRootfs set and not been
// closed; once its rootfs is gone, Commit fails with an error that
// errors.Is ErrNotRunning. Storage that cannot commit gives an error that
// errors.Is errors.ErrUnsupported.
//
// The new image's config is the image's, or opts.Config: never what the
// sandbox was started with (Options.Entrypoint, Args, Env, User, Dir), which belongs
// to that run. What the workload wrote is untrusted: the diff is unpacked
// with the checks of an imported layer (names that leave it, links out of
// it and the like refused). A layerfs.Store bounds it by its reserve of
// free space only (layerfs.Options.MinFreeSpace): it is already on disk,
// within Options.DiskQuota if one is set. A storage plugin's diff, which
// comes from the plugin, is bounded by the store's import limits too.
//
// A running sandbox is frozen while its diff is read, unless
// opts.NoPause, and thawed afterwards on every path, the caller's context
// ending included; a sandbox paused with Pause before Commit is thawed
// too.
func (s *Sandbox) Commit(ctx context.Context, name string, opts *CommitOptions) (*layerfs.Image, error) {
	if opts == nil {
		opts = &CommitOptions{}
	}
	s.mu.Lock()
	started, closed := s.started, s.closed
	storage, key, cg, hold, id := s.storage, s.state.RootfsKey, s.cg, s.hold, s.id
	running := s.result != nil
	handle := s.cmd == nil && s.proc != nil
	select {
	case <-s.done:
		running = false
	default:
	}
	s.mu.Unlock()
	if !started || (!handle && hold == nil) {
		return nil, ErrNotStarted
	}
	if closed {
		return nil, fmt.Errorf("commit sandbox %s: closed: %w", id, ErrNotRunning)
	}
	c, ok := storage.(committer)
	if !ok {
		return nil, fmt.Errorf("commit sandbox %s: storage %T cannot commit: %w", id, storage, errors.ErrUnsupported)
	}
	lopts := &layerfs.CommitOptions{Name: name, Author: opts.Author, Comment: opts.Message, Config: opts.Config,
		CreatedBy: opts.CreatedBy, MountPoints: s.mountPoints()}
	if handle {
		// Another process's sandbox, whose workload may have ended
		// since Open: there is then nothing to freeze.
		running = s.state.Init.alive()
	}
	var img *layerfs.Image
	commit := func() error {
		return s.frozen(ctx, cg, running && !opts.NoPause, func() (err error) {
			img, err = c.Commit(ctx, key, lopts)
			return err
		})
	}

	var err error
	if handle {
		// Its owner alone releases the rootfs; the store says so if
		// it has.
		if err = commit(); errors.Is(err, layerfs.ErrNotFound) && !running {
			err = fmt.Errorf("%w: %w", ErrNotRunning, err)
		}
	} else if err = hold.read(commit); errors.Is(err, errRootfsReleased) {
		err = fmt.Errorf("%w: %w (Options.KeepRootfs keeps it after the workload ends)", ErrNotRunning, err)
	}
	if err != nil {
		return nil, fmt.Errorf("commit sandbox %s: %w", id, err)
	}
	return img, nil
}

// mountPoints are where the init mounts over the rootfs, making a stub
// (an empty file or directory) where the image has nothing: berth's
// filesystems, the etc files, the caller's mounts. They are one run's,
// not the image's, and Commit leaves their stubs out. A handle from Open
// knows only the first two: the caller's mounts are not recorded.
func (s *Sandbox) mountPoints() []string {
	var out []string
	for _, m := range baseMounts(nil) {
		out = append(out, m.Target)
	}
	for _, name := range etcFiles {
		out = append(out, "/etc/"+name)
	}
	for _, m := range s.opts.Mounts {
		out = append(out, m.Destination)
	}
	if s.security(&s.opts).ReadonlyRootfs && !mountsAt(s.opts.Mounts, "/tmp") {
		out = append(out, "/tmp")
	}
	return out
}

// frozen calls fn with the sandbox's processes frozen if freeze is set,
// and thaws them afterwards however fn or the freeze ended: a freeze cut
// short by ctx leaves the cgroup asked to freeze, which the thaw undoes.
func (s *Sandbox) frozen(ctx context.Context, cg interface {
	Freeze(context.Context) error
	Thaw(context.Context) error
}, freeze bool, fn func() error) (err error) {
	if !freeze || cg == nil {
		return fn()
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawTimeout)
		defer cancel()
		// A cgroup removed meanwhile (the workload killed) has
		// nothing left to thaw.
		if terr := cg.Thaw(tctx); terr != nil && !errors.Is(terr, cgroup.ErrNotFound) {
			s.log.Error("thaw after commit", "id", s.id, "err", terr)
			err = errors.Join(err, fmt.Errorf("thaw: %w", terr))
		}
	}()
	if err := cg.Freeze(ctx); err != nil {
		// A cgroup already removed has no process left to freeze: the
		// workload has just ended, and its rootfs is still.
		if !errors.Is(err, cgroup.ErrNotFound) {
			return fmt.Errorf("freeze: %w", err)
		}
	}
	return fn()
}

// withRootfs calls fn with the host path of the sandbox's rootfs, held so
// that it is not released until fn returns, and whether the workload still
// runs. The rootfs is there while the workload runs and, under
// Options.KeepRootfs, after it has ended until Close; otherwise withRootfs
// fails with an error that errors.Is ErrNotRunning (ErrNotStarted before
// Start). For a handle from Open, the owner may release the rootfs at any
// time: fn must cope with it vanishing.
//
// The path is the host's view of a tree the workload controls: fn must
// resolve names in it as the sandbox would (openat2 RESOLVE_IN_ROOT),
// never with the host's path functions, which follow its links out of it.
func (s *Sandbox) withRootfs(fn func(path string, running bool) error) error {
	s.mu.Lock()
	started, closed, hold, path, id := s.started, s.closed, s.hold, s.rootfs, s.id
	running := s.result != nil
	handle := s.cmd == nil && s.proc != nil
	select {
	case <-s.done:
		running = false
	default:
	}
	s.mu.Unlock()
	switch {
	case !started || path == "":
		return ErrNotStarted
	case closed:
		return fmt.Errorf("sandbox %s: closed: %w", id, ErrNotRunning)
	case handle:
		return fn(path, s.state.Init.alive())
	}
	err := hold.read(func() error { return fn(path, running) })
	if errors.Is(err, errRootfsReleased) {
		return fmt.Errorf("sandbox %s: %w: %w (Options.KeepRootfs keeps it after the workload ends)", id, ErrNotRunning, err)
	}
	return err
}

// Image returns the image the sandbox was made from, once Start (or Open)
// has resolved it; nil before, and on a handle from Open whose image has
// left the store since. A caller changing a commit's config starts
// from a copy of its Config.Config.
func (s *Sandbox) Image() *layerfs.Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.img
}
