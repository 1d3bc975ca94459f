package testenv

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-dev/berth/layerfs"
)

// ImportAlpineWith imports into store, as image name, the shared Alpine
// rootfs with extra's entries added after its own. An entry of extra
// named as one of Alpine's replaces it, so that a test can turn an
// image's file into a link. The entries carry no content: they are the
// links, directories, device nodes and FIFOs a hostile image is made of.
//
// Tests of several packages build their crafted images this way rather
// than ship them as blobs.
func ImportAlpineWith(ctx context.Context, store *layerfs.Store, name string, extra ...*tar.Header) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	layer, err := os.CreateTemp("", "berth-alpine-with-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	if err := writeAlpineWith(layer, filepath.Join(root, "..", "shared", "images", Alpine), extra); err != nil {
		return fmt.Errorf("write image %s: %w", name, err)
	}
	if err := layer.Close(); err != nil {
		return err
	}
	_, err = store.Import(ctx, layer.Name(), &layerfs.ImportOptions{Name: name})
	return err
}

// Symlinks are the tar entries of symbolic links, each from a name of
// links (a path in the rootfs, without a leading slash) to its value, in
// the order of their names.
func Symlinks(links map[string]string) []*tar.Header {
	var hdrs []*tar.Header
	for _, name := range slices.Sorted(maps.Keys(links)) {
		hdrs = append(hdrs, &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: links[name], Mode: 0o777})
	}
	return hdrs
}

// writeAlpineWith writes to out, as an uncompressed tar, the gzipped
// rootfs tar src with extra's entries added and those of src they name
// left out.
func writeAlpineWith(out io.Writer, src string, extra []*tar.Header) error {
	replaced := make(map[string]bool, len(extra))
	for _, hdr := range extra {
		replaced[entryName(hdr.Name)] = true
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(out)
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if replaced[entryName(hdr.Name)] {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	for _, hdr := range extra {
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return tw.Close()
}

// entryName is a tar entry's path in the rootfs, however the archive
// spells it: "./etc/" and "etc" are the same directory.
func entryName(name string) string {
	return strings.TrimSuffix(strings.TrimPrefix(name, "./"), "/")
}
