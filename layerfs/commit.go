package layerfs

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
)

// A DiffFunc writes the changes of a rootfs to w as an uncompressed OCI
// layer tar: changed files as they are, deletions as whiteouts. It must
// return once ctx is done or a write to w fails.
type DiffFunc func(ctx context.Context, w io.Writer) error

// CommitDiff stores what diff writes as a new gzipped layer on top of
// parent's layers, and the result as a new image whose config is parent's
// with that layer added. It is Commit for rootfses the store did not make:
// those of a storage plugin, say.
//
// The tar is untrusted input, and is unpacked as any imported layer is:
// under the store's import limits (Options.MaxImportSize,
// MaxImportEntries, MinFreeSpace), with names that leave the layer, links
// out of it and the like refused. A diff that fails, or a tar the store
// refuses, fails the commit and leaves no image; what it staged is
// removed, and a layer that other imports may share meanwhile is left for
// GC as garbage, as after a refused import.
//
// Only parent's digest is used: the manifest and config come from the
// store, which must still hold them and parent's layer blobs.
func (s *Store) CommitDiff(ctx context.Context, parent *Image, diff DiffFunc, opts *CommitOptions) (*Image, error) {
	if parent == nil {
		return nil, fmt.Errorf("commit: no parent image: %w", ErrNotFound)
	}
	if diff == nil {
		return nil, fmt.Errorf("commit on %s: no diff", parent.Digest)
	}
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
	base, err := s.readImage(parent.Digest)
	if err != nil {
		return nil, fmt.Errorf("commit: base image: %w", err)
	}
	for _, layer := range base.Manifest.Layers {
		if !s.hasBlob(layer.Digest) {
			return nil, fmt.Errorf("commit: base image %s: layer blob %s: %w", base.Digest, layer.Digest, ErrNotFound)
		}
	}
	return s.commitLayer(s.withImportBudget(ctx), base, "commit on "+base.Digest.String(), diff, opts, names)
}

// commitLayer ingests diff's tar, gzipped on its way into the store where
// it is unpacked in one pass, as a layer on base, and stores the new
// image. The caller holds the store's lock, and chooses the limits the
// unpack is under by the budget ctx carries.
func (s *Store) commitLayer(ctx context.Context, base *Image, what string, diff DiffFunc, opts *CommitOptions, names []string) (*Image, error) {
	// The diff stops when the ingest does, and has returned before this
	// does: nothing of it outlives the commit.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	diff = withoutMountPoints(diff, opts.MountPoints)
	src := layerSource{name: "diff", open: func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		wg.Go(func() {
			zw := gzip.NewWriter(pw)
			err := diff(ctx, zw)
			if cerr := zw.Close(); err == nil {
				err = cerr
			}
			pw.CloseWithError(err)
		})
		return pr, nil
	}}
	layer, err := s.ingestLayer(ctx, src, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}

	cfg := commitConfig(base, opts, false)
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, layer.diffID)
	cb, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	layers := append(append([]v1.Descriptor(nil), base.Manifest.Layers...), layer.descriptor())
	id, err := s.writeManifest(cb, layers, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.addImage(id, names); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	refs, err := s.refs()
	if err != nil {
		return nil, err
	}
	return s.loadImage(id, refs)
}

// CommitConfig stores a new image with parent's layers and a config
// changed as opts say (opts.Config, Author, Comment, CreatedBy), adding no
// layer: its history entry is marked empty_layer, as those of Dockerfile
// instructions that change only metadata (ENV, CMD, ...) are. The image's
// layers are the parent's, so its rootfs is the parent's too.
func (s *Store) CommitConfig(ctx context.Context, parent *Image, opts *CommitOptions) (*Image, error) {
	if parent == nil {
		return nil, fmt.Errorf("commit config: no parent image: %w", ErrNotFound)
	}
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
	base, err := s.readImage(parent.Digest)
	if err != nil {
		return nil, fmt.Errorf("commit config: base image: %w", err)
	}
	what := "commit config on " + base.Digest.String()
	cb, err := json.Marshal(commitConfig(base, opts, true))
	if err != nil {
		return nil, err
	}
	id, err := s.writeManifest(cb, base.Manifest.Layers, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := s.addImage(id, names); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	refs, err := s.refs()
	if err != nil {
		return nil, err
	}
	return s.loadImage(id, refs)
}

// defaultCreatedBy is the history's created_by for a commit that names
// nothing else.
const defaultCreatedBy = "berth commit"

// commitConfig returns the config file of an image made from base as opts
// say: base's, with opts.Config as its runtime config if set, a creation
// time of now, and a history entry for the commit. The rootfs's diff IDs
// are base's; a commit that adds a layer appends its own.
func commitConfig(base *Image, opts *CommitOptions, emptyLayer bool) *v1.ConfigFile {
	cfg := base.Config.DeepCopy()
	if opts.Config != nil {
		cfg.Config = *opts.Config.DeepCopy()
	}
	now := time.Now().UTC()
	cfg.Created = v1.Time{Time: now}
	if opts.Author != "" {
		cfg.Author = opts.Author
	}
	createdBy := opts.CreatedBy
	if createdBy == "" {
		createdBy = defaultCreatedBy
	}
	cfg.History = append(cfg.History, v1.History{
		Created:    v1.Time{Time: now},
		CreatedBy:  createdBy,
		Author:     opts.Author,
		Comment:    opts.Comment,
		EmptyLayer: emptyLayer,
	})
	return cfg
}

// errFilterDone stops a diff whose tar the filter no longer reads.
var errFilterDone = errors.New("diff filter done")

// withoutMountPoints returns diff with the runtime's stubs at points left
// out (see CommitOptions.MountPoints): entries named by points that are a
// directory or an empty regular file. Anything else at those names, and
// everything under them, is kept. Without points, diff is returned as it
// is.
func withoutMountPoints(diff DiffFunc, points []string) DiffFunc {
	skip := map[string]bool{}
	for _, p := range points {
		if p = strings.Trim(path.Clean("/"+p), "/"); p != "" {
			skip[p] = true
		}
	}
	if len(skip) == 0 {
		return diff
	}
	stub := func(h *tar.Header) bool {
		name := strings.Trim(path.Clean("/"+h.Name), "/")
		return skip[name] && (h.Typeflag == tar.TypeDir || (h.Typeflag == tar.TypeReg && h.Size == 0))
	}
	return func(ctx context.Context, w io.Writer) error {
		pr, pw := io.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() { pw.CloseWithError(diff(ctx, pw)) })
		err := copyTarWithout(w, pr, stub)
		// A diff still writing (the filter failed) stops at its
		// next write.
		pr.CloseWithError(errFilterDone)
		wg.Wait()
		return err
	}
}

// copyTarWithout copies the tar archive r to w, leaving out the entries
// skip reports.
func copyTarWithout(w io.Writer, r io.Reader, skip func(*tar.Header) bool) error {
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		if skip(h) {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
