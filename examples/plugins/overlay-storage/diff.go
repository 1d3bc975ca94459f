package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/plugin"
)

// Diff writes key's upper directory, the rootfs's changes, as an OCI
// layer tar: overlayfs's whiteouts (0/0 character devices) become .wh.
// files and its opaque directories a .wh..wh..opq entry, as the built-in
// driver's Diff does, with owners mapped back for a user namespace. It
// makes the plugin a plugin.Differ (capability "diff"), so berth can
// commit a sandbox's rootfs as an image.
func (s *storage) Diff(ctx context.Context, key string, w io.Writer) error {
	unlock, err := s.lock(key)
	if err != nil {
		return err
	}
	defer unlock()
	upper := filepath.Join(s.dir(key), "upper")
	if _, err := os.Lstat(upper); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootfs %q: %w", key, plugin.ErrNotFound)
	}
	maps, err := readIDMaps(s.dir(key))
	if err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(upper, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == upper {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode()&fs.ModeCharDevice != 0 && st.Rdev == 0 {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(filepath.Dir(rel), ".wh."+d.Name()), Mode: 0o600})
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uname, hdr.Gname = rel, "", ""
		if maps != nil {
			// A layer holds the ids of the namespace, not the host's.
			hdr.Uid, hdr.Gid = toContainer(maps.UIDs, hdr.Uid), toContainer(maps.GIDs, hdr.Gid)
		}
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			if v := make([]byte, 1); xattr(path, "trusted.overlay.opaque", v) && v[0] == 'y' {
				return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(rel, ".wh..wh..opq"), Mode: 0o600})
			}
			return nil
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("diff %q: %w", key, err)
	}
	return tw.Close()
}

// xattr reads attribute name of path into v and reports whether it is set.
func xattr(path, name string, v []byte) bool {
	n, err := unix.Lgetxattr(path, name, v)
	return err == nil && n > 0
}
