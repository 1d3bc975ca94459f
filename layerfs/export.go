package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/atomicfile"
	"github.com/berth-dev/berth/internal/clip"
)

// Export writes the image that ref names to w as a tar in format:
// FormatOCILayout, or FormatDockerArchive, which is what `docker save`
// writes today: an OCI layout plus the manifest.json older tools read.
// Blobs are written byte for byte as stored, so importing the result
// gives back the same manifest, config and layer digests.
func (s *Store) Export(ctx context.Context, ref string, w io.Writer, format Format) error {
	if format != FormatOCILayout && format != FormatDockerArchive {
		return fmt.Errorf("export: format %q: %w (want %s or %s)", format, ErrUnknownFormat, FormatOCILayout, FormatDockerArchive)
	}
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	img, err := s.Image(ctx, ref)
	if err != nil {
		return err
	}
	files, err := s.layoutFiles(img, nil)
	if err != nil {
		return err
	}
	if format == FormatDockerArchive {
		m := tarball.Manifest{{Config: blobName(img.ConfigDigest), RepoTags: img.Names}}
		for _, l := range img.Layers {
			m[0].Layers = append(m[0].Layers, blobName(l.Digest))
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		files = append(files, layoutFile{name: "manifest.json", data: b})
	}
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: exportTime, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := f.writeTo(tw); err != nil {
			return fmt.Errorf("export %s: %w", f.name, err)
		}
	}
	return tw.Close()
}

// ExportFile writes the image that ref names to the file target, as a tar
// in format (see Export). The file appears, or replaces what was there,
// only once it is whole and on disk: an export that fails, is cancelled
// or is killed leaves the target as it was and, where the filesystem
// supports O_TMPFILE, nothing beside it.
func (s *Store) ExportFile(ctx context.Context, ref, target string, format Format) error {
	f, err := atomicfile.Create(target, 0o644)
	if err != nil {
		return fmt.Errorf("export %s: %w", clip.String(ref), err)
	}
	defer f.Abort()
	if err := s.Export(ctx, ref, f, format); err != nil {
		return fmt.Errorf("export %s to %s: %w", clip.String(ref), target, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("export %s: %w", clip.String(ref), err)
	}
	return nil
}

// ExportLayout adds the image that ref names to the OCI image layout in
// dir, creating the layout if dir does not hold one. An index entry with
// the same name is replaced.
func (s *Store) ExportLayout(ctx context.Context, ref, dir string) error {
	l, err := s.use(ctx)
	if err != nil {
		return err
	}
	defer l.unlock()
	img, err := s.Image(ctx, ref)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("export %s: %w", clip.String(ref), err)
	}
	// The layout may be anyone's: its index is read as an archive's
	// is, and nothing is written through a symlink in it.
	var existing *v1.IndexManifest
	switch b, err := readDocument(dirMembers(dir), "index.json", layoutDocument, 0); {
	case err == nil:
		existing = new(v1.IndexManifest)
		if err := decodeJSON("index.json", b, existing); err != nil {
			return fmt.Errorf("export: existing layout %s: %w", dir, err)
		}
	case !isNotFound(err):
		return fmt.Errorf("export: existing layout %s: %w", dir, err)
	}
	files, err := s.layoutFiles(img, existing)
	if err != nil {
		return err
	}
	root, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("export %s: %w", clip.String(ref), err)
	}
	defer root.Close()
	blobs, err := mkdirBeneath(root, "blobs")
	if err != nil {
		return fmt.Errorf("export %s: %w", clip.String(ref), err)
	}
	defer blobs.Close()
	sha, err := mkdirBeneath(blobs, "sha256")
	if err != nil {
		return fmt.Errorf("export %s: %w", clip.String(ref), err)
	}
	defer sha.Close()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		parent, name := root, f.name
		if base, ok := strings.CutPrefix(f.name, "blobs/sha256/"); ok {
			parent, name = sha, base
		}
		var st unix.Stat_t
		if f.src != "" && unix.Fstatat(int(parent.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			continue // content-addressed: already there means already right
		}
		if err := f.writeFileAt(parent, name, filepath.Join(dir, filepath.FromSlash(f.name))); err != nil {
			return fmt.Errorf("export %s: %w", clip.String(ref), err)
		}
	}
	return nil
}

// mkdirBeneath makes the directory name in parent unless it is there, and
// opens it: a symlink there is refused, not followed.
func mkdirBeneath(parent *os.File, name string) (*os.File, error) {
	p := filepath.Join(parent.Name(), name)
	if err := unix.Mkdirat(int(parent.Fd()), name, 0o755); err != nil && err != unix.EEXIST {
		return nil, &os.PathError{Op: "mkdir", Path: p, Err: err}
	}
	fd, err := openat2(int(parent.Fd()), name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS,
	})
	switch {
	case err == unix.ELOOP:
		return nil, fmt.Errorf("%s is a symlink, which an export does not write through: %w", p, ErrUnsafeEntry)
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// exportTime stamps exported tar members, so that exporting an image twice
// gives the same bytes.
var exportTime = time.Unix(0, 0).UTC()

func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// A layoutFile is one member of an exported layout: bytes in memory or a
// blob in the store.
type layoutFile struct {
	name string
	data []byte
	src  string
}

func (f layoutFile) writeTo(tw *tar.Writer) error {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, ModTime: exportTime, Format: tar.FormatPAX, Size: int64(len(f.data))}
	if f.src == "" {
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.data)
		return err
	}
	r, err := os.Open(f.src)
	if err != nil {
		return err
	}
	defer r.Close()
	fi, err := r.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, r)
	return err
}

// writeFileAt writes the member as name in dir through an atomicfile.File, so
// that a layout being added to never holds a partial file, even when the
// export is killed. target is the path errors give.
func (f layoutFile) writeFileAt(dir *os.File, name, target string) error {
	var r io.Reader = bytes.NewReader(f.data)
	if f.src != "" {
		src, err := os.Open(f.src)
		if err != nil {
			return err
		}
		defer src.Close()
		r = src
	}
	w, err := atomicfile.CreateAt(dir, name, target, 0o644)
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	return w.Commit()
}

// layoutFiles lists the files of an OCI layout holding img, keeping the
// entries of index (if any) for other images.
func (s *Store) layoutFiles(img *Image, index *v1.IndexManifest) ([]layoutFile, error) {
	desc := v1.Descriptor{
		MediaType: img.MediaType,
		Digest:    img.Digest,
		Platform:  &v1.Platform{OS: img.Config.OS, Architecture: img.Config.Architecture, Variant: img.Config.Variant},
	}
	if desc.MediaType == "" {
		desc.MediaType = types.OCIManifestSchema1
	}
	fi, err := os.Stat(s.blobPath(img.Digest))
	if err != nil {
		return nil, fmt.Errorf("image %s manifest: %w", img.Digest, err)
	}
	desc.Size = fi.Size()
	if len(img.Names) > 0 {
		r, _ := ParseReference(img.Names[0])
		desc.Annotations = map[string]string{
			"io.containerd.image.name": img.Names[0],
			ocispec.AnnotationRefName:  r.Tag,
		}
	}
	if index == nil {
		index = &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	}
	var kept []v1.Descriptor
	for _, d := range index.Manifests {
		if d.Digest == desc.Digest || (desc.Annotations != nil && d.Annotations["io.containerd.image.name"] == img.Names[0]) {
			continue
		}
		kept = append(kept, d)
	}
	index.Manifests = append(kept, desc)
	ib, err := json.Marshal(index)
	if err != nil {
		return nil, err
	}
	files := []layoutFile{
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", data: ib},
		{name: blobName(img.Digest), src: s.blobPath(img.Digest)},
		{name: blobName(img.ConfigDigest), src: s.blobPath(img.ConfigDigest)},
	}
	seen := map[v1.Hash]bool{img.Digest: true, img.ConfigDigest: true}
	for _, l := range img.Layers {
		if !seen[l.Digest] {
			seen[l.Digest] = true
			files = append(files, layoutFile{name: blobName(l.Digest), src: s.blobPath(l.Digest)})
		}
	}
	return files, nil
}
