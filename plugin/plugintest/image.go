package plugintest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berth-dev/berth/layerfs"
)

// tinyImage is the name the kit's own image gets in its own store.
const tinyImage = "plugintest/tiny:1"

// The kit's image has two layers, so that a plugin is seen to stack them
// in the right order and to honour the upper layer's whiteouts: the
// second replaces a file of the first, deletes another and makes a
// directory opaque.
const (
	releaseFile   = "etc/kit-release"
	releaseBottom = "bottom\n"
	releaseTop    = "top\n"
	deletedFile   = "etc/kit-deleted"
	keptFile      = "data/kept"
	opaqueDir     = "data/opaque"
	hiddenFile    = "data/opaque/old" // in the bottom layer, under the opaque dir
	shownFile     = "data/opaque/new" // in the top layer
	linkFile      = "bin/kit-link"
	linkTarget    = "../etc/kit-release"
	ownedFile     = "home/kit/owned" // owned by ownedID in the image
	ownedID       = 1000
)

// tinyLayers returns the two layer tars, bottom first.
func tinyLayers() ([][]byte, error) {
	dir := func(name string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755}
	}
	file := func(name, body string) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}
	}
	type entry struct {
		hdr  *tar.Header
		body string
	}
	owned := file(ownedFile, "mine\n")
	owned.Uid, owned.Gid, owned.Mode = ownedID, ownedID, 0o640
	home := dir("home/kit")
	home.Uid, home.Gid = ownedID, ownedID
	bottom := []entry{
		{dir("bin"), ""}, {dir("etc"), ""}, {dir("data"), ""}, {dir(opaqueDir), ""},
		{dir("home"), ""}, {home, ""}, {dir("tmp"), ""},
		{file(releaseFile, releaseBottom), releaseBottom},
		{file(deletedFile, "deleted\n"), "deleted\n"},
		{file(keptFile, "kept\n"), "kept\n"},
		{file(hiddenFile, "hidden\n"), "hidden\n"},
		{&tar.Header{Typeflag: tar.TypeSymlink, Name: linkFile, Linkname: linkTarget, Mode: 0o777}, ""},
		{owned, "mine\n"},
	}
	top := []entry{
		{dir("etc"), ""}, {dir("data"), ""}, {dir(opaqueDir), ""},
		{file(releaseFile, releaseTop), releaseTop},
		{file("etc/.wh.kit-deleted", ""), ""},
		{file(opaqueDir+"/.wh..wh..opq", ""), ""},
		{file(shownFile, "shown\n"), "shown\n"},
	}
	var layers [][]byte
	for _, entries := range [][]entry{bottom, top} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			if err := tw.WriteHeader(e.hdr); err != nil {
				return nil, err
			}
			if _, err := io.WriteString(tw, e.body); err != nil {
				return nil, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		layers = append(layers, buf.Bytes())
	}
	return layers, nil
}

// importTinyImage writes the kit's image as an OCI layout under tmp and
// imports it into store as tinyImage.
func importTinyImage(ctx context.Context, store *layerfs.Store, tmp string) (*layerfs.Image, error) {
	tars, err := tinyLayers()
	if err != nil {
		return nil, err
	}
	img := empty.Image
	for _, b := range tars {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(tmp, "tiny-oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1"})); err != nil {
		return nil, err
	}
	return store.Import(ctx, dir, &layerfs.ImportOptions{Name: tinyImage})
}

// checkTinyRootfs reports how the rootfs at root differs from the kit's
// image, whose files it must show, owned by ids through owner (the
// identity without a user namespace).
func checkTinyRootfs(root string, owner func(uint32) uint32) error {
	var errs []error
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("the image's file /%s: %w", name, err))
		}
		return string(b)
	}
	absent := func(name, why string) {
		if _, err := os.Lstat(filepath.Join(root, name)); !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("/%s shows, but %s (lstat: %v)", name, why, err))
		}
	}
	if got := read(releaseFile); got != releaseTop && got != "" {
		if got == releaseBottom {
			errs = append(errs, fmt.Errorf("/%s shows the bottom layer's version: the layers are stacked upside down", releaseFile))
		} else {
			errs = append(errs, fmt.Errorf("/%s holds %q, want %q", releaseFile, got, releaseTop))
		}
	}
	read(keptFile)
	read(shownFile)
	absent(deletedFile, "the top layer deletes it with a whiteout")
	absent(hiddenFile, "the top layer makes its directory opaque")
	absent(".wh.kit-deleted", "whiteouts must not show as files")
	absent("etc/.wh.kit-deleted", "whiteouts must not show as files")
	if got, err := os.Readlink(filepath.Join(root, linkFile)); err != nil {
		errs = append(errs, fmt.Errorf("the image's symlink /%s: %w", linkFile, err))
	} else if got != linkTarget {
		errs = append(errs, fmt.Errorf("the symlink /%s points at %q, want %q", linkFile, got, linkTarget))
	}
	if fi, err := os.Lstat(filepath.Join(root, ownedFile)); err != nil {
		errs = append(errs, fmt.Errorf("the image's file /%s: %w", ownedFile, err))
	} else {
		st := fi.Sys().(*syscall.Stat_t)
		if want := owner(ownedID); st.Uid != want || st.Gid != want {
			errs = append(errs, fmt.Errorf("/%s is owned by %d:%d on the host, want %d:%d", ownedFile, st.Uid, st.Gid, want, want))
		}
		if fi.Mode().Perm() != 0o640 {
			errs = append(errs, fmt.Errorf("/%s has mode %v, want -rw-r-----", ownedFile, fi.Mode().Perm()))
		}
	}
	return errors.Join(errs...)
}

// tarEntries reads a tar and returns its entries' contents by clean
// relative name ("./etc/x" and "etc/x" are both "etc/x").
func tarEntries(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(filepath.Clean("/"+hdr.Name), "/")
		out[name] = string(b)
	}
}
