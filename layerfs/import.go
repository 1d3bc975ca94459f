package layerfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-dev/berth/internal/clip"
)

// ImportOptions tune Import. The zero value is ready to use.
type ImportOptions struct {
	// Name tags the imported image, overriding any name the source carries.
	Name string
	// Progress, if set, is called as source bytes are read, with the bytes
	// read so far and the total expected (0 when unknown).
	Progress func(done, total int64)
	// BlobProgress, if set, is told how each layer blob of ImportImage
	// goes: skipped when the store has it, its bytes as they are read,
	// and finished once it is stored and checked.
	BlobProgress func(BlobProgress)
}

// Format is an on-disk image format Import reads.
type Format string

// The formats Import recognises.
const (
	FormatOCILayout     Format = "oci-layout"     // a directory or tar with oci-layout, index.json, blobs/
	FormatDockerArchive Format = "docker-archive" // the tar `docker save` writes
	FormatRootfsTar     Format = "rootfs-tar"     // a plain root filesystem tar (.tar, .tar.gz, .tar.zst)
	FormatDirectory     Format = "directory"      // a root filesystem directory
)

// DetectFormat tells which format the file or directory at src is in.
// A tar is an OCI layout when it holds an oci-layout file, or an
// index.json and blobs; a docker archive when it holds a manifest.json
// beside nothing but image members, or one that names a docker archive's
// layers (which must then be there); and otherwise a root filesystem,
// which may well hold an index.json or a manifest.json of its own.
func DetectFormat(src string) (Format, error) {
	return detectFormat(context.Background(), src)
}

func detectFormat(ctx context.Context, src string) (Format, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		// Not index.json alone: a root filesystem may well hold one.
		if exists(filepath.Join(src, "oci-layout")) {
			return FormatOCILayout, nil
		}
		if exists(filepath.Join(src, "manifest.json")) {
			return FormatDockerArchive, nil
		}
		return FormatDirectory, nil
	}
	a, err := readTarArchive(ctx, src, "", nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", src, err)
	}
	a.close()
	return a.format, nil
}

// Import brings the image at path into the store: an OCI image layout (a
// directory or a tar of one), a docker-archive tar, a root filesystem tar
// (optionally gzip or zstd compressed) or a root filesystem directory,
// the last two as one-layer images. Blobs are checked against every digest
// the source promises. Importing an image the store already holds is cheap
// and only adds its names.
//
// A docker archive may be in any of the layouts Docker (before and after
// v25), podman and skopeo write; one that holds several images needs
// opts.Name to pick one. An image archive is untrusted: everything read
// from it must be a regular file inside it (ErrUnsafeEntry otherwise),
// no larger than its kind allows (ErrMemberTooLarge) and of the size its
// descriptor gives, and errors quote none of its bytes.
func (s *Store) Import(ctx context.Context, path string, opts *ImportOptions) (*Image, error) {
	if opts == nil {
		opts = &ImportOptions{}
	}
	ctx = s.withImportBudget(ctx) // one budget for the archive and all its layers
	names, err := nameList(opts.Name, "an import name")
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		// An archive is read more than once, and in place.
		what := "not a regular file"
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			what = fileTypeName(st.Mode) + ", not a regular file or directory"
		}
		return nil, fmt.Errorf("import %s: %s: %w", path, what, ErrUnknownFormat)
	}
	l, err := s.use(ctx)
	if err != nil {
		return nil, err
	}
	defer l.unlock()
	s.cleanStaging(false)

	progress := &progressCounter{report: opts.Progress}
	var id v1.Hash
	var srcNames []string
	var format Format
	if fi.IsDir() {
		format, err = detectFormat(ctx, path)
		switch {
		case err != nil:
		case format == FormatDirectory:
			id, err = s.importRootfs(ctx, layerSource{name: path, open: dirTarGz(ctx, path)}, progress)
		default:
			id, srcNames, err = s.importArchive(ctx, dirMembers(path), format, opts.Name, progress)
		}
	} else {
		id, srcNames, format, err = s.importFile(ctx, path, opts.Name, progress)
	}
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	if names == nil {
		names = srcNames
	}
	if err := s.addImage(id, names); err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	s.log.Info("imported image", "source", path, "format", format, "digest", id, "names", names)
	refs, err := s.refs()
	if err != nil {
		return nil, err
	}
	return s.loadImage(id, refs)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func openFile(path string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// dirTarGz streams a directory as a gzipped layer. The tar is written in a
// fixed order and the gzip header carries no name or time, so the same
// tree always gives the same digest.
func dirTarGz(ctx context.Context, dir string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			zw := gzip.NewWriter(pw)
			err := writeTreeTar(ctx, zw, dir)
			if cerr := zw.Close(); err == nil {
				err = cerr
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
}

// defaultPath is the PATH images built without a config get, the one
// container runtimes conventionally supply.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// importRootfs stores a root filesystem as a one-layer image with a minimal
// config. The config carries no timestamp, so importing the same tree twice
// yields the same image.
func (s *Store) importRootfs(ctx context.Context, src layerSource, progress *progressCounter) (v1.Hash, error) {
	layer, err := s.ingestLayer(ctx, src, progress)
	if err != nil {
		return v1.Hash{}, err
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ocispec.ImageConfig{Env: []string{defaultPath}, Cmd: []string{"/bin/sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: nil},
	}
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.Digest(layer.diffID.String()))
	cb, err := json.Marshal(cfg)
	if err != nil {
		return v1.Hash{}, err
	}
	return s.writeManifest(cb, []v1.Descriptor{layer.descriptor()}, nil)
}

// writeManifest stores a config and an OCI manifest for it and its layers
// and returns the manifest digest. The config's bytes are kept as given:
// their digest is the image ID.
func (s *Store) writeManifest(cb []byte, layers []v1.Descriptor, annotations map[string]string) (v1.Hash, error) {
	cd, err := s.putBlob(cb)
	if err != nil {
		return v1.Hash{}, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: cd, Size: int64(len(cb))},
		Layers:        layers,
		Annotations:   annotations,
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	return s.putBlob(mb)
}

// importFile imports the tar at src: an image archive or a root
// filesystem, which reading it tells apart.
func (s *Store) importFile(ctx context.Context, src, want string, progress *progressCounter) (v1.Hash, []string, Format, error) {
	st, err := s.newStaging()
	if err != nil {
		return v1.Hash{}, nil, "", err
	}
	defer st.remove()
	copyTo := st.path("archive")
	if err := os.Mkdir(copyTo, 0o700); err != nil {
		return v1.Hash{}, nil, "", err
	}
	progress.total = fileSize(src)
	a, err := readTarArchive(ctx, src, copyTo, progress)
	if err != nil {
		return v1.Hash{}, nil, "", err
	}
	defer a.close()
	if a.format == FormatRootfsTar {
		progress.done = 0
		id, err := s.importRootfs(ctx, layerSource{name: filepath.Base(src), open: openFile(src)}, progress)
		return id, nil, a.format, err
	}
	if a.inPlace {
		// The layers are read in place, and counted as they are.
		progress.total = 0
	} else {
		// Copying the compressed archive's members counted its bytes.
		progress = nil
	}
	id, names, err := s.importArchive(ctx, a, a.format, want, progress)
	return id, names, a.format, err
}

// importArchive imports an OCI layout or a docker-archive.
func (s *Store) importArchive(ctx context.Context, members memberSource, format Format, want string, progress *progressCounter) (v1.Hash, []string, error) {
	if format == FormatOCILayout {
		return s.importLayout(ctx, members, want, progress)
	}
	return s.importDockerArchive(ctx, members, want, progress)
}

// layoutImage is an image manifest found in an OCI layout's index.
type layoutImage struct {
	desc v1.Descriptor
	name string // from its annotations, if any
}

// importLayout imports one image of an OCI image layout: the only one, the
// one whose annotated name is want, or the one for this platform.
func (s *Store) importLayout(ctx context.Context, members memberSource, want string, progress *progressCounter) (v1.Hash, []string, error) {
	blob := func(h v1.Hash) string { return path.Join("blobs", h.Algorithm, h.Hex) }
	readVerified := func(d v1.Descriptor, kind documentKind) ([]byte, error) {
		if d.Digest.Algorithm != "sha256" {
			return nil, fmt.Errorf("blob %s: digest algorithm %q is not sha256", clip.Cut(d.Digest.String(), 100), clip.Cut(d.Digest.Algorithm, 20))
		}
		b, err := readDocument(members, blob(d.Digest), kind, d.Size)
		if err != nil {
			return nil, fmt.Errorf("OCI layout: %w", err)
		}
		if got := sha256Hash(b); got != d.Digest {
			return nil, fmt.Errorf("blob %s hashes to %s: %w", d.Digest, got, ErrDigestMismatch)
		}
		return b, nil
	}
	if b, err := readDocument(members, "oci-layout", layoutDocument, 0); err == nil {
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := decodeJSON("oci-layout", b, &l); err != nil {
			return v1.Hash{}, nil, fmt.Errorf("OCI layout: %w", err)
		}
		if l.Version == "" {
			return v1.Hash{}, nil, errors.New("OCI layout: oci-layout gives no imageLayoutVersion")
		}
	} else if !isNotFound(err) {
		// The specification requires the file, but layouts that lack it
		// are common enough; one that is there must be a file.
		return v1.Hash{}, nil, fmt.Errorf("OCI layout: %w", err)
	}
	ib, err := readDocument(members, "index.json", layoutDocument, 0)
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("OCI layout: %w", err)
	}
	images, err := walkLayoutIndex(ctx, ib, func(d v1.Descriptor) ([]byte, error) {
		return readVerified(d, manifestDocument)
	})
	if err != nil {
		return v1.Hash{}, nil, err
	}
	chosen, err := chooseLayoutImage(images, want)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	mb, err := readVerified(chosen.desc, manifestDocument)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	var m v1.Manifest
	if err := decodeJSON("manifest "+chosen.desc.Digest.String(), mb, &m); err != nil {
		return v1.Hash{}, nil, err
	}
	cb, err := readVerified(m.Config, configDocument)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	var cfg v1.ConfigFile
	if err := decodeJSON("config "+m.Config.Digest.String(), cb, &cfg); err != nil {
		return v1.Hash{}, nil, err
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return v1.Hash{}, nil, fmt.Errorf("manifest %s has %d layers but its config lists %d diff IDs", chosen.desc.Digest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	if progress != nil {
		for _, l := range m.Layers {
			progress.total += l.Size
		}
	}
	for i, d := range m.Layers {
		if !d.MediaType.IsLayer() {
			return v1.Hash{}, nil, fmt.Errorf("manifest %s: layer %d has media type %q, not a layer", chosen.desc.Digest, i, clip.Cut(string(d.MediaType), 100))
		}
		if d.Digest.Algorithm != "sha256" {
			return v1.Hash{}, nil, fmt.Errorf("manifest %s: layer %d: digest algorithm %q is not sha256", chosen.desc.Digest, i, clip.Cut(d.Digest.Algorithm, 20))
		}
		src := layerSource{name: d.Digest.String(), digest: d.Digest, diffID: cfg.RootFS.DiffIDs[i], open: sizedOpener(members, blob(d.Digest), d.Size)}
		if _, err := s.ingestLayer(ctx, src, progress); err != nil {
			return v1.Hash{}, nil, err
		}
	}
	if _, err := s.putBlob(cb); err != nil {
		return v1.Hash{}, nil, err
	}
	id, err := s.putBlob(mb)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	var names []string
	if chosen.name != "" {
		names = []string{chosen.name}
	}
	return id, names, nil
}

// sizedOpener returns an opener of the layer blob name, for a
// layerSource; see openSized.
func sizedOpener(members memberSource, name string, size int64) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return openSized(members, name, size) }
}

// annotatedName returns the full image name an index entry carries, if
// any. containerd's annotation holds the whole name; the OCI one often
// holds only a tag, which names nothing without its repository.
func annotatedName(a map[string]string) string {
	for _, key := range []string{"io.containerd.image.name", ocispec.AnnotationRefName} {
		v := a[key]
		if v == "" || !strings.ContainsAny(v, ":/@") {
			continue
		}
		if names, err := nameList(v, "an image name"); err == nil {
			return names[0]
		}
	}
	return ""
}

func chooseLayoutImage(images []layoutImage, want string) (layoutImage, error) {
	if len(images) == 0 {
		return layoutImage{}, errors.New("OCI layout holds no image manifest")
	}
	if len(images) == 1 {
		return images[0], nil
	}
	if want != "" {
		if r, err := ParseReference(want); err == nil {
			for _, im := range images {
				if im.name == r.String() {
					return im, nil
				}
			}
		}
	}
	var match []layoutImage
	for _, im := range images {
		p := im.desc.Platform
		if p == nil || (p.OS == "linux" && p.Architecture == runtime.GOARCH) {
			match = append(match, im)
		}
	}
	if len(match) == 1 {
		return match[0], nil
	}
	// Name a few: a crafted index may list a thousand.
	const shown = 8
	var names []string
	for _, im := range images[:min(len(images), shown)] {
		n := im.name
		if n == "" {
			n = im.desc.Digest.String()
		}
		names = append(names, n)
	}
	if len(images) > shown {
		names = append(names, fmt.Sprintf("and %d more", len(images)-shown))
	}
	return layoutImage{}, fmt.Errorf("OCI layout holds %d images (%s) and none is singled out by name or platform", len(images), clip.Cut(strings.Join(names, ", "), 1000))
}

// importDockerArchive imports an image from a `docker save` archive, in
// any of the layouts Docker, podman and skopeo write. The archive has no
// manifest, so one is made from its layers as they are, keeping their
// bytes (and so their digests) unchanged.
func (s *Store) importDockerArchive(ctx context.Context, members memberSource, want string, progress *progressCounter) (v1.Hash, []string, error) {
	mb, err := readDocument(members, "manifest.json", layoutDocument, 0)
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("docker archive: %w", err)
	}
	var manifest tarball.Manifest
	if err := decodeJSON("docker archive manifest.json", mb, &manifest); err != nil {
		return v1.Hash{}, nil, err
	}
	entry, err := chooseArchiveEntry(manifest, want)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	member := func(name string) (string, error) {
		clean := path.Clean(name)
		if name == "" || path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return "", unsafeMember(name, "leads outside the archive")
		}
		return clean, nil
	}
	cfgPath, err := member(entry.Config)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	cb, err := readDocument(members, cfgPath, configDocument, 0)
	if err != nil {
		return v1.Hash{}, nil, fmt.Errorf("docker archive config: %w", err)
	}
	// Docker, podman and skopeo name the config by its digest, the image
	// ID; a config that is not what its name says has been altered.
	if hexName := strings.TrimSuffix(path.Base(cfgPath), ".json"); len(hexName) == 64 && isHex(hexName) {
		if got := sha256Hash(cb); got.Hex != hexName {
			return v1.Hash{}, nil, fmt.Errorf("docker archive config %s hashes to %s: %w", cfgPath, got, ErrDigestMismatch)
		}
	}
	var cfg v1.ConfigFile
	if err := decodeJSON("docker archive config "+cfgPath, cb, &cfg); err != nil {
		return v1.Hash{}, nil, err
	}
	if len(cfg.RootFS.DiffIDs) != len(entry.Layers) {
		return v1.Hash{}, nil, fmt.Errorf("docker archive lists %d layers but the config has %d diff IDs", len(entry.Layers), len(cfg.RootFS.DiffIDs))
	}
	paths := make([]string, len(entry.Layers))
	for i, name := range entry.Layers {
		p, err := member(name)
		if err != nil {
			return v1.Hash{}, nil, err
		}
		// Every layer must be there before any is unpacked.
		f, err := members.open(p)
		if err != nil {
			return v1.Hash{}, nil, fmt.Errorf("docker archive layer %d: %w", i, err)
		}
		if progress != nil {
			progress.total += f.size
		}
		f.Close()
		paths[i] = p
	}
	var layers []v1.Descriptor
	for i, p := range paths {
		l, err := s.ingestLayer(ctx, layerSource{name: p, diffID: cfg.RootFS.DiffIDs[i], open: sizedOpener(members, p, 0)}, progress)
		if err != nil {
			return v1.Hash{}, nil, err
		}
		layers = append(layers, l.descriptor())
	}
	id, err := s.writeManifest(cb, layers, nil)
	if err != nil {
		return v1.Hash{}, nil, err
	}
	var names []string
	for _, t := range entry.RepoTags {
		if n, err := nameList(t, "an image name"); err == nil {
			names = append(names, n...)
		} else {
			s.log.Warn("docker archive: skipping unusable tag", "tag", shownName(t))
		}
	}
	return id, names, nil
}

// chooseArchiveEntry picks the image of a docker archive to import: the
// only one, or the one with want among its tags.
func chooseArchiveEntry(manifest tarball.Manifest, want string) (*tarball.Descriptor, error) {
	switch len(manifest) {
	case 0:
		return nil, errors.New("docker archive holds no image")
	case 1:
		return &manifest[0], nil
	}
	if want != "" {
		r, err := ParseReference(want)
		for i := range manifest {
			for _, t := range manifest[i].RepoTags {
				if t == want || (err == nil && t == r.String()) {
					return &manifest[i], nil
				}
				if tr, terr := ParseReference(t); terr == nil && err == nil && tr.String() == r.String() {
					return &manifest[i], nil
				}
			}
		}
	}
	var tags []string
	for _, e := range manifest {
		tags = append(tags, e.RepoTags...)
	}
	return nil, fmt.Errorf("docker archive holds %d images (tags %s); name the one to import", len(manifest), clip.Cut(strings.Join(tags, ", "), 400))
}
