package layerfs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
)

// A ProblemKind classifies what Check found wrong.
type ProblemKind string

// The kinds of problem Check reports.
const (
	// ProblemCorruptBlob: a blob's content does not hash to its name, or
	// it is not a regular file.
	ProblemCorruptBlob ProblemKind = "corrupt blob"
	// ProblemMissingBlob: an image's manifest, config or layer blob is
	// not in the store.
	ProblemMissingBlob ProblemKind = "missing blob"
	// ProblemBadImage: an image record, manifest or config that cannot be
	// read or parsed, or that contradicts itself.
	ProblemBadImage ProblemKind = "bad image"
	// ProblemDiffID: a layer blob does not decompress to the diff ID its
	// image's config gives it.
	ProblemDiffID ProblemKind = "diff ID mismatch"
	// ProblemMissingLayer: an image or rootfs uses a layer that has no
	// unpacked directory.
	ProblemMissingLayer ProblemKind = "missing layer"
	// ProblemBadLayer: an unpacked layer that is not a directory holding
	// a diff directory.
	ProblemBadLayer ProblemKind = "bad layer"
	// ProblemLayerContent: an unpacked layer whose files differ from what
	// its blob unpacks to (CheckOptions.Layers).
	ProblemLayerContent ProblemKind = "layer content"
	// ProblemDanglingRef: a name that points at no image, or cannot be
	// read.
	ProblemDanglingRef ProblemKind = "dangling reference"
	// ProblemBadRootfs: a prepared rootfs without a readable record.
	ProblemBadRootfs ProblemKind = "bad rootfs"
	// ProblemOrphan: a blob or unpacked layer that no image and no rootfs
	// uses.
	ProblemOrphan ProblemKind = "orphan"
	// ProblemLeftover: a temporary file or staging directory that an
	// interrupted operation left behind, or a file the store never makes.
	ProblemLeftover ProblemKind = "leftover"
)

// A Problem is one thing Check found wrong with the store.
type Problem struct {
	Kind   ProblemKind
	Path   string // the file or directory concerned
	Detail string // what is wrong with it
}

// String is the problem on one line of printable text. Details name files
// of an image's layers, which the image chose: a name holding a newline or
// a terminal escape would otherwise add lines of its own to a report, or
// reach the terminal.
func (p Problem) String() string {
	return fmt.Sprintf("%s: %s: %s", p.Kind, printable(p.Path), printable(p.Detail))
}

// printable returns s with what is not printable escaped as Go escapes it
// in a quoted string, or s itself when all of it is.
func printable(s string) string {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			q := strconv.Quote(s)
			return q[1 : len(q)-1]
		}
	}
	return s
}

// CheckOptions say how thoroughly Check verifies the store. The zero value
// (or nil) checks everything but the unpacked layers' files.
type CheckOptions struct {
	// Layers also unpacks every layer in use again from its blob, and
	// compares each file's type, permissions, owner, size, content, link
	// target, device number and extended attributes with the store's
	// unpacked layer. It reads and writes as much as the images hold, one
	// layer at a time, and keeps the store's reserve of free space as an
	// import does: when a layer would not fit, Check fails with ErrNoSpace.
	Layers bool
}

// Check verifies the store and returns everything it finds wrong, sorted
// by path; the error is only for a check that could not be carried out.
//
// Every blob is hashed and must match its name. Every image must have its
// manifest, config and layer blobs, and each layer blob must decompress to
// the diff ID the config gives it and have an unpacked directory. Names
// must point at images, and prepared rootfses must have readable records
// whose layers are present. Blobs and layers that nothing uses, staging
// directories and temporary files are reported as orphans and leftovers:
// GC removes them, so after a GC with no operation running there are none.
//
// An unpacked layer cannot be hashed back to its diff ID: it is in
// overlay format (whiteouts converted, entries in the filesystem's order,
// tar headers gone), so re-archiving it cannot reproduce the tar the diff
// ID hashes. What is always verified is that the blob it was unpacked from
// is intact and yields that diff ID; with opts.Layers, the unpacked files
// are also compared with a fresh unpack of that blob.
//
// Check holds the store exclusively, like GC, so that it never sees an
// import half-published: other operations on the store wait for it.
func (s *Store) Check(ctx context.Context, opts *CheckOptions) ([]Problem, error) {
	if opts == nil {
		opts = &CheckOptions{}
	}
	l, err := lockFile(ctx, s.path("store.lock"), unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	c := &checker{
		s:        s,
		ctx:      ctx,
		blobOK:   map[v1.Hash]bool{},
		images:   map[v1.Hash]bool{},
		blobs:    map[v1.Hash]bool{},
		layers:   map[v1.Hash]bool{},
		diffIDs:  map[v1.Hash][]v1.Hash{},
		diffIDOK: map[v1.Hash]bool{},
	}
	steps := []func() error{c.checkBlobs, c.checkImages, c.checkRootfses, c.checkHolds, c.checkRefs, c.checkDiffIDs, c.checkLayers, c.checkOrphanBlobs}
	if opts.Layers {
		steps = append(steps, c.checkLayerContents)
	}
	// Last, once the other steps' staging areas are gone.
	steps = append(steps, c.checkTmp)
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("check store %s: %w", s.root, err)
		}
	}
	sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].Path < c.problems[j].Path })
	return c.problems, nil
}

// checker carries what one Check has learnt from step to step.
type checker struct {
	s        *Store
	ctx      context.Context
	problems []Problem

	blobOK   map[v1.Hash]bool      // blobs present and intact
	images   map[v1.Hash]bool      // images marked, by manifest digest
	blobs    map[v1.Hash]bool      // blobs something uses
	layers   map[v1.Hash]bool      // unpacked layers something uses, by diff ID
	diffIDs  map[v1.Hash][]v1.Hash // layer blob digest to the diff IDs images give it
	diffIDOK map[v1.Hash]bool      // diff IDs a blob was found to yield
}

func (c *checker) report(kind ProblemKind, path, format string, args ...any) {
	c.problems = append(c.problems, Problem{Kind: kind, Path: path, Detail: fmt.Sprintf(format, args...)})
}

// readDir lists dir, reporting and skipping the names a writer's temporary
// files have (atomicfile.IsTemp).
func (c *checker) readDir(dir string) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := entries[:0]
	for _, e := range entries {
		if atomicfile.IsTemp(e.Name()) {
			c.report(ProblemLeftover, filepath.Join(dir, e.Name()), "temporary file of an interrupted write")
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// readDigestDir lists dir like readDir, also reporting and skipping the
// entries not named by a sha256 digest: the store names each of dir's
// entries by the digest of what it holds, and naming says which.
func (c *checker) readDigestDir(dir, naming string) ([]os.DirEntry, error) {
	entries, err := c.readDir(dir)
	if err != nil {
		return nil, err
	}
	out := entries[:0]
	for _, e := range entries {
		if len(e.Name()) != 64 || !isHex(e.Name()) {
			c.report(ProblemLeftover, filepath.Join(dir, e.Name()), "not named by %s", naming)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// checkBlobs hashes every blob.
func (c *checker) checkBlobs() error {
	dir := c.s.path("blobs", "sha256")
	entries, err := c.readDigestDir(dir, "a sha256 digest")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(dir, e.Name())
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if !e.Type().IsRegular() {
			c.report(ProblemCorruptBlob, p, "not a regular file (%s)", e.Type())
			continue
		}
		got, err := hashFile(p)
		if err != nil {
			c.report(ProblemCorruptBlob, p, "unreadable: %v", err)
			continue
		}
		if got != h {
			c.report(ProblemCorruptBlob, p, "content has digest %s", got)
			continue
		}
		c.blobOK[h] = true
	}
	return nil
}

func hashFile(path string) (v1.Hash, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Close()
	return hashReader(f)
}

// hashReader is the sha256 digest of what r yields.
func hashReader(r io.Reader) (v1.Hash, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return v1.Hash{}, err
	}
	return hashOf(h), nil
}

// checkImages checks each image record and marks what the image uses.
func (c *checker) checkImages() error {
	dir := c.s.path("images")
	entries, err := c.readDigestDir(dir, "a manifest digest")
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		var rec imageRecord
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil {
			c.report(ProblemBadImage, p, "record unreadable: %v", err)
		}
		c.markImage(v1.Hash{Algorithm: "sha256", Hex: e.Name()}, p)
	}
	return nil
}

// markImage marks the blobs and layers of the image with manifest h,
// which what is at path uses, reporting those missing.
func (c *checker) markImage(h v1.Hash, path string) {
	if c.images[h] {
		return
	}
	c.images[h] = true
	c.blobs[h] = true
	if !c.present(h, path, "manifest") {
		return
	}
	mb, err := c.s.readBlob(h)
	var m *v1.Manifest
	if err == nil {
		m, err = v1.ParseManifest(bytes.NewReader(mb))
	}
	if err != nil {
		c.report(ProblemBadImage, path, "manifest %s: %v", h, err)
		return
	}
	c.blobs[m.Config.Digest] = true
	for _, l := range m.Layers {
		c.blobs[l.Digest] = true
	}
	if !c.present(m.Config.Digest, path, "config") {
		return
	}
	cb, err := c.s.readBlob(m.Config.Digest)
	var cfg *v1.ConfigFile
	if err == nil {
		cfg, err = v1.ParseConfigFile(bytes.NewReader(cb))
	}
	if err != nil {
		c.report(ProblemBadImage, path, "config %s: %v", m.Config.Digest, err)
		return
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		c.report(ProblemBadImage, path, "manifest has %d layers, config %d diff IDs", len(m.Layers), len(cfg.RootFS.DiffIDs))
		return
	}
	for i, l := range m.Layers {
		diffID := cfg.RootFS.DiffIDs[i]
		c.layers[diffID] = true
		if c.present(l.Digest, path, fmt.Sprintf("layer %d", i+1)) && !slices.Contains(c.diffIDs[l.Digest], diffID) {
			c.diffIDs[l.Digest] = append(c.diffIDs[l.Digest], diffID)
		}
		c.layerPresent(diffID, path)
	}
}

// present reports a blob that what is at path needs and that is missing
// (a corrupt one is reported already).
func (c *checker) present(h v1.Hash, path, what string) bool {
	if c.blobOK[h] {
		return true
	}
	if !exists(c.s.blobPath(h)) {
		c.report(ProblemMissingBlob, path, "%s blob %s is missing", what, h)
	}
	return false
}

func (c *checker) layerPresent(diffID v1.Hash, path string) {
	if !exists(c.s.layerDir(diffID)) {
		c.report(ProblemMissingLayer, path, "layer %s has no unpacked directory", diffID)
	}
}

// checkRootfses checks each prepared rootfs's record and marks what it
// uses, as GC keeps it.
func (c *checker) checkRootfses() error {
	dir := c.s.path("rootfs")
	entries, err := c.readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if _, err := c.readDir(p); err != nil {
			c.report(ProblemBadRootfs, p, "unreadable: %v", err)
			continue
		}
		b, err := os.ReadFile(filepath.Join(p, "rootfs.json"))
		if err != nil {
			c.report(ProblemBadRootfs, p, "no record: %v", err)
			continue
		}
		var rec rootfsRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			c.report(ProblemBadRootfs, p, "record unreadable: %v", err)
			continue
		}
		for _, id := range rec.Layers {
			c.layers[id] = true
			c.layerPresent(id, p)
		}
		if c.blobOK[rec.Image] {
			c.markImage(rec.Image, p)
		}
	}
	return nil
}

// checkRefs checks that every name points at an image.
func (c *checker) checkRefs() error {
	dir := c.s.path("refs")
	entries, err := c.readDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			c.report(ProblemDanglingRef, p, "unreadable: %v", err)
			continue
		}
		h, err := v1.NewHash(strings.TrimSpace(string(b)))
		if err != nil {
			c.report(ProblemDanglingRef, p, "does not hold a digest: %v", err)
			continue
		}
		if !exists(c.s.imagePath(h)) {
			c.report(ProblemDanglingRef, p, "points at image %s, which the store does not have", h)
		}
	}
	return nil
}

// checkDiffIDs decompresses each intact layer blob an image uses and
// compares the digest of the result with the image's diff ID.
func (c *checker) checkDiffIDs() error {
	digests := make([]v1.Hash, 0, len(c.diffIDs))
	for d := range c.diffIDs {
		digests = append(digests, d)
	}
	sort.Slice(digests, func(i, j int) bool { return digests[i].Hex < digests[j].Hex })
	for _, d := range digests {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		got, err := diffIDOf(c.s.blobPath(d))
		if err != nil {
			c.report(ProblemDiffID, c.s.blobPath(d), "does not decompress: %v", err)
			continue
		}
		c.diffIDOK[got] = true
		for _, want := range c.diffIDs[d] {
			if got != want {
				c.report(ProblemDiffID, c.s.blobPath(d), "decompresses to content with digest %s, but an image gives it diff ID %s", got, want)
			}
		}
	}
	return nil
}

func diffIDOf(path string) (v1.Hash, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, err
	}
	defer f.Close()
	r, _, err := decompress(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return v1.Hash{}, err
	}
	defer r.Close()
	return hashReader(r)
}

// checkLayers checks the unpacked layers' directories and finds those
// nothing uses.
func (c *checker) checkLayers() error {
	dir := c.s.path("layers")
	entries, err := c.readDigestDir(dir, "a diff ID")
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if fi, err := os.Lstat(filepath.Join(p, "diff")); err != nil || !fi.IsDir() {
			c.report(ProblemBadLayer, p, "has no diff directory")
		}
		if !c.layers[v1.Hash{Algorithm: "sha256", Hex: e.Name()}] {
			c.report(ProblemOrphan, p, "unpacked layer no image or rootfs uses")
		}
	}
	return nil
}

func (c *checker) checkOrphanBlobs() error {
	digests := make([]v1.Hash, 0, len(c.blobOK))
	for h := range c.blobOK {
		if !c.blobs[h] {
			digests = append(digests, h)
		}
	}
	for _, h := range digests {
		c.report(ProblemOrphan, c.s.blobPath(h), "blob no image or rootfs uses")
	}
	return nil
}

// checkTmp reports staging directories and probes that interrupted
// operations left: with the store held exclusively, none is in use.
func (c *checker) checkTmp() error {
	entries, err := c.readDir(c.s.path("tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		c.report(ProblemLeftover, c.s.path("tmp", e.Name()), "staging area of an interrupted operation")
	}
	// And temporary files of records written at the top of the store.
	_, err = c.readDir(c.s.root)
	return err
}
