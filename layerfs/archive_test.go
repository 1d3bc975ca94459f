package layerfs

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// archiveImage is a one-layer image as the members of an OCI layout and
// of a docker archive, the latter in the layout skopeo and podman write
// (<hex>.tar layers, a <hex>.json config).
type archiveImage struct {
	layer, config, manifest, index []byte
	layerDigest, configDigest      v1.Hash
	manifestDigest                 v1.Hash
}

func newArchiveImage(t testing.TB) archiveImage {
	t.Helper()
	var im archiveImage
	im.layer = buildTar(t, dirEntry("etc/", 0o755), fileEntry("etc/hostname", "archive\n", 0o644))
	im.layerDigest = digestBytes(im.layer)
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{im.layerDigest}},
		Config: v1.Config{Cmd: []string{"/bin/sh"}}}
	im.config, _ = json.Marshal(cfg)
	im.configDigest = digestBytes(im.config)
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: im.configDigest, Size: int64(len(im.config))},
		Layers: []v1.Descriptor{{MediaType: types.OCIUncompressedLayer, Digest: im.layerDigest, Size: int64(len(im.layer))}}}
	im.manifest, _ = json.Marshal(m)
	im.manifestDigest = digestBytes(im.manifest)
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: im.manifestDigest, Size: int64(len(im.manifest)),
		Annotations: map[string]string{"io.containerd.image.name": "archive.test/image:1"}}}}
	im.index, _ = json.Marshal(idx)
	return im
}

// members returns the image's members in format, in the order the tools
// write them, and the names of its roles: what each hostile case replaces.
func (im archiveImage) members(format Format) ([]entry, map[string]string) {
	blob := func(h v1.Hash) string { return "blobs/sha256/" + h.Hex }
	if format == FormatOCILayout {
		return []entry{
				dirEntry("blobs/", 0o755), dirEntry("blobs/sha256/", 0o755),
				fileEntry(blob(im.layerDigest), string(im.layer), 0o644),
				fileEntry(blob(im.configDigest), string(im.config), 0o644),
				fileEntry(blob(im.manifestDigest), string(im.manifest), 0o644),
				fileEntry("index.json", string(im.index), 0o644),
				fileEntry("oci-layout", `{"imageLayoutVersion":"1.0.0"}`, 0o644),
			}, map[string]string{
				"oci-layout": "oci-layout", "index": "index.json", "manifest": blob(im.manifestDigest),
				"config": blob(im.configDigest), "layer": blob(im.layerDigest),
			}
	}
	layer, config := im.layerDigest.Hex+".tar", im.configDigest.Hex+".json"
	manifest, _ := json.Marshal(tarball.Manifest{{Config: config, RepoTags: []string{"archive.test/image:1"}, Layers: []string{layer}}})
	return []entry{
			fileEntry(layer, string(im.layer), 0o644),
			fileEntry(config, string(im.config), 0o644),
			fileEntry("manifest.json", string(manifest), 0o644),
			fileEntry("repositories", `{"archive.test/image":{"1":"`+im.layerDigest.Hex+`"}}`, 0o644),
		}, map[string]string{
			"manifest.json": "manifest.json", "config": config, "layer": layer,
		}
}

// hugeEntry is a regular member of size bytes whose contents are left to
// writeArchive: zeros, and a hole where it can make one.
func hugeEntry(name string, size int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: testTime}, body: "\x00huge"}
}

func isHuge(e entry) bool { return e.body == "\x00huge" }

// writeArchive writes entries to p as a tar, gzipped if asked; a huge
// entry, which must come last, is written as a hole in an uncompressed
// tar and as zeros in a compressed one.
func writeArchive(t testing.TB, p string, entries []entry, gz bool) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f
	var zw io.WriteCloser
	if gz {
		zw = gzipWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	for i, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if !isHuge(e) {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if i != len(entries)-1 {
			t.Fatal("a huge entry must be the last")
		}
		if gz {
			if _, err := io.CopyN(tw, zeroReader{}, h.Size); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// The tar writer has written the header and buffers nothing:
		// leave a hole for the contents, then end the archive.
		if _, err := f.Seek((h.Size+511)/512*512, io.SeekCurrent); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func gzipWriter(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) }

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// writeMembers makes entries as files in dir: what an unpacked archive,
// or a layout directory, holds.
func writeMembers(t testing.TB, dir string, entries []entry) {
	t.Helper()
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(path.Clean(e.hdr.Name)))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(p); err == nil && (e.hdr.Typeflag != tar.TypeDir || !fi.IsDir()) {
			os.RemoveAll(p)
		}
		var err error
		switch e.hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeSymlink:
			err = os.Symlink(e.hdr.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, filepath.FromSlash(e.hdr.Linkname)), p)
		case tar.TypeChar:
			err = unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(uint32(e.hdr.Devmajor), uint32(e.hdr.Devminor))))
		case tar.TypeFifo:
			err = unix.Mkfifo(p, 0o644)
		default:
			if isHuge(e) {
				var f *os.File
				if f, err = os.Create(p); err == nil {
					err = f.Truncate(e.hdr.Size)
					f.Close()
				}
				break
			}
			err = os.WriteFile(p, []byte(e.body), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// planted is a file outside an archive that hostile members point at. Its
// access time is set to the epoch so that reading it shows (the
// filesystem's relatime moves an access time older than the modification
// time); its contents are what no error may quote.
type planted struct{ path, secret string }

func plantFile(t testing.TB, dir string) planted {
	t.Helper()
	p := planted{path: filepath.Join(dir, "secret"), secret: "\x01QZXJ-not-for-errors"}
	if err := os.WriteFile(p.path, []byte(p.secret), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p.path, time.Unix(0, 0), time.Now()); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p planted) check(t testing.TB, err error) {
	t.Helper()
	var st unix.Stat_t
	if serr := unix.Stat(p.path, &st); serr != nil {
		t.Fatal(serr)
	}
	if st.Atim.Sec != 0 {
		t.Errorf("import (err %v) read %s, outside the archive", err, p.path)
	}
	if err != nil && (strings.Contains(err.Error(), "QZXJ") || strings.Contains(err.Error(), "\x01")) {
		t.Errorf("error quotes the file it refused: %q", err)
	}
}

// errSizeNotDescriptors stands for the error of a blob whose size is not
// its descriptor's.
var errSizeNotDescriptors = errors.New("size is not the descriptor's")

// Everything an import reads of an archive or layout directory is a
// regular file inside it, read no further than its kind allows: each
// member, in each container, replaced by each thing a regular file could
// be replaced by.
func TestImportArchiveMembersMustBeRegularFilesInside(t *testing.T) {
	im := newArchiveImage(t)
	secretDir := t.TempDir()
	secret := plantFile(t, secretDir)
	devZero := entry{hdr: tar.Header{Typeflag: tar.TypeChar, Mode: 0o644, Devmajor: 1, Devminor: 5, ModTime: testTime}}
	fifo := entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Mode: 0o644, ModTime: testTime}}

	type form struct {
		name string
		// make returns the entries that replace the member name with
		// the contents body (and size cap max), nil if the form does
		// not apply; alias is a directory for a second copy, with a
		// name the format allows.
		make func(name, body string, max int64, container, alias string) []entry
		want func(role string) error // the error wanted, nil for success
	}
	up := func(name string) string { return strings.Repeat("../", strings.Count(name, "/")) }
	always := func(err error) func(string) error { return func(string) error { return err } }
	forms := []form{
		{"absolute symlink out", func(name, _ string, _ int64, _, _ string) []entry {
			return []entry{symlinkEntry(name, secret.path)}
		}, always(ErrUnsafeEntry)},
		{"relative symlink out", func(name, _ string, _ int64, _, _ string) []entry {
			return []entry{symlinkEntry(name, up(name)+"../../../../../../../../.."+secret.path)}
		}, always(ErrUnsafeEntry)},
		{"symlink to /dev/zero", func(name, _ string, _ int64, _, _ string) []entry {
			return []entry{symlinkEntry(name, "/dev/zero")}
		}, always(ErrUnsafeEntry)},
		{"symlink loop", func(name, _ string, _ int64, _, _ string) []entry {
			return []entry{symlinkEntry(name, path.Base(name))}
		}, always(ErrUnsafeEntry)},
		{"symlink to a member inside", func(name, body string, _ int64, _, alias string) []entry {
			return []entry{fileEntry(alias+path.Base(name), body, 0o644), symlinkEntry(name, up(name)+alias+path.Base(name))}
		}, always(nil)},
		{"hard link out", func(name, _ string, _ int64, container, _ string) []entry {
			if container == "dir" {
				return nil // a hard link in a directory is the file itself
			}
			return []entry{hardlinkEntry(name, secret.path)}
		}, always(ErrUnsafeEntry)},
		{"hard link inside", func(name, body string, _ int64, _, alias string) []entry {
			return []entry{fileEntry(alias+path.Base(name), body, 0o644), hardlinkEntry(name, alias+path.Base(name))}
		}, always(nil)},
		{"character device 1:5", func(name, _ string, _ int64, _, _ string) []entry {
			e := devZero
			e.hdr.Name = name
			return []entry{e}
		}, always(ErrUnsafeEntry)},
		{"FIFO", func(name, _ string, _ int64, _, _ string) []entry {
			e := fifo
			e.hdr.Name = name
			return []entry{e}
		}, always(ErrUnsafeEntry)},
		{"directory", func(name, _ string, _ int64, _, _ string) []entry {
			return []entry{dirEntry(name+"/", 0o755)}
		}, always(ErrUnsafeEntry)},
		{"huge", func(name, _ string, max int64, container, _ string) []entry {
			if max == 0 {
				// A layer: only an OCI descriptor gives its size, and
				// a hole would be gzipped slowly.
				if container == "tar.gz" || !strings.HasPrefix(name, "blobs/") {
					return nil
				}
				return []entry{hugeEntry(name, 64<<20)}
			}
			return []entry{hugeEntry(name, max+1)}
		}, func(role string) error {
			if role == "layer" {
				return errSizeNotDescriptors
			}
			return ErrMemberTooLarge
		}},
	}
	caps := map[string]int64{"oci-layout": 4 << 20, "index": 4 << 20, "manifest.json": 4 << 20, "manifest": 4 << 20, "config": 8 << 20}

	for _, format := range []Format{FormatOCILayout, FormatDockerArchive} {
		base, roles := im.members(format)
		alias := "blobs/alias/"
		if format == FormatDockerArchive {
			alias = strings.Repeat("a", 64) + "/"
		}
		bodies := map[string]string{}
		for _, e := range base {
			bodies[e.hdr.Name] = e.body
		}
		for _, container := range []string{"tar", "tar.gz", "dir"} {
			for role, name := range roles {
				for _, f := range forms {
					replace := f.make(name, bodies[name], caps[role], container, alias)
					if replace == nil {
						continue
					}
					t.Run(fmt.Sprintf("%s/%s/%s/%s", format, container, role, f.name), func(t *testing.T) {
						// Afresh, so that each case sees only its own reads.
						plantFile(t, secretDir)
						entries := append(append([]entry(nil), base...), replace...)
						dir := t.TempDir()
						src := filepath.Join(dir, "image."+container)
						if container == "dir" {
							writeMembers(t, src, entries)
						} else {
							writeArchive(t, src, entries, container == "tar.gz")
						}
						s := newStore(t, nil)
						img, err := s.Import(context.Background(), src, nil)
						want := f.want(role)
						switch {
						case want == nil && err != nil:
							t.Errorf("Import: %v", err)
						case want == errSizeNotDescriptors:
							// Refused for its size, before reading it.
							if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "its descriptor says") {
								t.Errorf("Import: %v, want a size that is not its descriptor's", err)
							}
						case want != nil && !errors.Is(err, want):
							t.Errorf("Import: %v, want %v", err, want)
						case want != nil && !strings.Contains(err.Error(), path.Base(name)):
							t.Errorf("Import: %v does not name the member %s", err, name)
						}
						checkImported(t, s, img, err)
						secret.check(t, err)
					})
				}
			}
		}
	}
}

// A compressed archive's members are copied out as it is read, and only
// while the store's filesystem has room: a member bigger than that is
// refused from its header, before anything is written.
func TestImportCompressedArchiveChecksFreeSpace(t *testing.T) {
	im := newArchiveImage(t)
	base, roles := im.members(FormatOCILayout)
	src := filepath.Join(t.TempDir(), "bomb.tar.gz")
	// The header claims a petabyte; the stream ends long before.
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzipWriter(f)
	tw := tar.NewWriter(zw)
	for _, e := range base {
		if e.hdr.Name == roles["layer"] {
			continue
		}
		h := e.hdr
		tw.WriteHeader(&h)
		tw.Write([]byte(e.body))
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: roles["layer"], Size: 1 << 50, Mode: 0o644})
	tw.Write(make([]byte, 4096))
	tw.Flush()
	zw.Close()
	f.Close()

	s := newStore(t, nil)
	_, err = s.Import(context.Background(), src, nil)
	if !errors.Is(err, unix.ENOSPC) || !strings.Contains(err.Error(), roles["layer"]) {
		t.Errorf("Import: %v, want ENOSPC naming the member", err)
	}
	checkImported(t, s, nil, err)
}

// detectCase is a tar and the format it is in, or the error to tell.
type detectCase struct {
	name    string
	entries []entry
	want    Format
	wantErr error
}

func detectCases(t testing.TB) []detectCase {
	im := newArchiveImage(t)
	oci, _ := im.members(FormatOCILayout)
	docker, _ := im.members(FormatDockerArchive)
	hexID := strings.Repeat("ab", 32)
	// docker save before v25: <id>/layer.tar, <id>/json, <id>/VERSION.
	legacy := []entry{
		dirEntry(hexID+"/", 0o755), fileEntry(hexID+"/VERSION", "1.0", 0o644),
		fileEntry(hexID+"/json", "{}", 0o644), fileEntry(hexID+"/layer.tar", string(im.layer), 0o644),
		fileEntry(im.configDigest.Hex+".json", string(im.config), 0o644),
	}
	legacyManifest, _ := json.Marshal(tarball.Manifest{{Config: im.configDigest.Hex + ".json", RepoTags: []string{"legacy:1"}, Layers: []string{hexID + "/layer.tar"}}})
	// docker save v25 and later: an OCI layout with a manifest.json.
	v25Manifest, _ := json.Marshal(tarball.Manifest{{Config: "blobs/sha256/" + im.configDigest.Hex, RepoTags: []string{"v25:1"}, Layers: []string{"blobs/sha256/" + im.layerDigest.Hex}}})
	rootfs := []entry{dirEntry("bin/", 0o755), fileEntry("bin/sh", "#!", 0o755), fileEntry("etc/hostname", "x", 0o644)}
	return []detectCase{
		{"OCI layout", oci, FormatOCILayout, nil},
		{"OCI layout without oci-layout", oci[:len(oci)-1], FormatOCILayout, nil},
		{"OCI layout, oci-layout only", oci[len(oci)-1:], FormatOCILayout, nil},
		{"index.json alone", oci[len(oci)-2 : len(oci)-1], FormatRootfsTar, nil},
		{"index.json among a root filesystem", append(append([]entry(nil), rootfs...), oci[len(oci)-2]), FormatRootfsTar, nil},
		{"index.json before a root filesystem", append([]entry{oci[len(oci)-2]}, rootfs...), FormatRootfsTar, nil},
		{"skopeo and podman docker-archive", docker, FormatDockerArchive, nil},
		{"docker save before v25", append(legacy, fileEntry("manifest.json", string(legacyManifest), 0o644), fileEntry("repositories", "{}", 0o644)), FormatDockerArchive, nil},
		{"docker save v25", append(append([]entry(nil), oci...), fileEntry("manifest.json", string(v25Manifest), 0o644)), FormatOCILayout, nil},
		{"root filesystem", rootfs, FormatRootfsTar, nil},
		{"root filesystem with ./", append([]entry{dirEntry("./", 0o755)}, rootfs...), FormatRootfsTar, nil},
		// A docker archive's manifest.json names its layers: a docker
		// archive, whatever else the tar holds (and if the layers are
		// missing, its import says so).
		{"docker archive among a root filesystem", append(append([]entry(nil), docker...), rootfs...), FormatDockerArchive, nil},
		{"docker archive after a root filesystem", append(append([]entry(nil), rootfs...), docker...), FormatDockerArchive, nil},
		{"docker manifest.json without its layers among a root filesystem", append([]entry{docker[2]}, rootfs...), FormatDockerArchive, nil},
		// Any other manifest.json is a root filesystem's own file.
		{"other manifest.json among a root filesystem", append([]entry{fileEntry("manifest.json", `{"name":"app","icons":[]}`, 0o644)}, rootfs...), FormatRootfsTar, nil},
		{"manifest.json list among a root filesystem", append(append([]entry(nil), rootfs...), fileEntry("manifest.json", `[{"Config":"","Layers":[]}]`, 0o644)), FormatRootfsTar, nil},
		{"layers without a manifest (docker before 1.10)", legacy, "", ErrUnknownFormat},
		{"empty", nil, "", ErrUnknownFormat},
		{"huge manifest.json", []entry{hugeEntry("manifest.json", 64<<20)}, "", ErrMemberTooLarge},
	}
}

// DetectFormat tells every archive layout apart from a root filesystem,
// and refuses what is neither.
func TestDetectFormatArchiveVariants(t *testing.T) {
	for _, tc := range detectCases(t) {
		for _, gz := range []bool{false, true} {
			if gz && tc.name == "docker archive after a root filesystem" {
				// A compressed tar is read only until a member says
				// it is a root filesystem.
				continue
			}
			t.Run(fmt.Sprintf("%s/gzip=%v", tc.name, gz), func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "x.tar")
				writeArchive(t, p, tc.entries, gz)
				got, err := DetectFormat(p)
				switch {
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Errorf("DetectFormat: %v, %v; want %v", got, err, tc.wantErr)
				case tc.wantErr == nil && (err != nil || got != tc.want):
					t.Errorf("DetectFormat: %v, %v; want %v", got, err, tc.want)
				}
			})
		}
	}
}

// A docker archive whose manifest.json names layers it does not hold is
// an error, whatever else it holds.
func TestImportDockerArchiveMissingLayer(t *testing.T) {
	im := newArchiveImage(t)
	docker, roles := im.members(FormatDockerArchive)
	var entries []entry
	for _, e := range docker {
		if e.hdr.Name != roles["layer"] {
			entries = append(entries, e)
		}
	}
	p := filepath.Join(t.TempDir(), "x.tar")
	writeArchive(t, p, entries, false)
	s := newStore(t, nil)
	img, err := s.Import(context.Background(), p, nil)
	if !isNotFound(err) || !strings.Contains(err.Error(), roles["layer"]) {
		t.Errorf("Import: %v, want not found naming %s", err, roles["layer"])
	}
	checkImported(t, s, img, err)
}

// A document that does not parse is named in the error, with where it
// goes wrong, but none of its bytes are quoted.
func TestArchiveDocumentErrorsQuoteNothing(t *testing.T) {
	im := newArchiveImage(t)
	// A byte no message of berth's has, first, as error messages
	// quote single characters.
	const secret = "~QZXJ"
	for name, index := range map[string]string{
		"not JSON":           secret,
		"wrong type":         `{"manifests":"` + secret + `"}`,
		"malformed digest":   `{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + secret + `"}]}`,
		"malformed platform": `{"manifests":[{"digest":"sha256:` + strings.Repeat("0", 64) + `","platform":{"os":7}}],"x":"` + secret + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			base, _ := im.members(FormatOCILayout)
			src := filepath.Join(t.TempDir(), "layout")
			writeMembers(t, src, append(base, fileEntry("index.json", index, 0o644)))
			s := newStore(t, nil)
			img, err := s.Import(context.Background(), src, nil)
			if err == nil || !strings.Contains(err.Error(), "index.json") {
				t.Errorf("Import: %v, want an error naming index.json", err)
			} else if strings.Contains(err.Error(), "~") || strings.Contains(err.Error(), "QZXJ") {
				t.Errorf("error quotes the document: %v", err)
			}
			checkImported(t, s, img, err)
		})
	}
}

// What an archive's table costs is bounded: members, and the length of
// the names it resolves, whatever the archive holds.
func TestArchiveTableBounds(t *testing.T) {
	im := newArchiveImage(t)
	oci, _ := im.members(FormatOCILayout)
	many := append([]entry(nil), oci...)
	for i := 0; i <= maxArchiveMembers; i++ {
		many = append(many, fileEntry("blobs/sha256/empty"+strconv.Itoa(i), "", 0o644))
	}
	docker, roles := im.members(FormatDockerArchive)
	longName, _ := json.Marshal(tarball.Manifest{{Config: roles["config"], Layers: []string{strings.Repeat("a/", 3000) + "layer.tar"}}})
	// A link shorter than PATH_MAX that makes the path longer.
	hexDir := strings.Repeat("a", 64)
	deep := []entry{symlinkEntry(hexDir+"/d", strings.Repeat("x/", 2045)+"d")}
	deepManifest, _ := json.Marshal(tarball.Manifest{{Config: roles["config"], Layers: []string{hexDir + "/d"}}})
	// Names that no path can be, which the table once kept whole: a
	// member that nothing reads, and a link no one follows.
	longMember := append(append([]entry(nil), oci...), fileEntry("blobs/sha256/"+strings.Repeat("n", unix.PathMax), "", 0o644))
	longLink := append(append([]entry(nil), oci...), symlinkEntry("blobs/sha256/l", strings.Repeat("t", unix.PathMax+1)))
	longHardlink := append(append([]entry(nil), oci...), hardlinkEntry("blobs/sha256/h", strings.Repeat("t", unix.PathMax+1)))
	// Names each short enough that together make a table of many MiB.
	manyNames := append([]entry(nil), oci...)
	for i, total := 0, 0; total <= maxArchiveNameBytes; i++ {
		e := symlinkEntry(fmt.Sprintf("blobs/%d/%s", i, strings.Repeat("n", 2000)), strings.Repeat("t", 2000))
		manyNames = append(manyNames, e)
		total += len(e.hdr.Name) + len(e.hdr.Linkname)
	}
	for _, tc := range []struct {
		name    string
		entries []entry
		want    error
	}{
		{"too many members", many, ErrMemberTooLarge},
		{"a member name longer than PATH_MAX", longMember, ErrUnsafeEntry},
		{"a symlink target longer than PATH_MAX", longLink, ErrUnsafeEntry},
		{"a hard link target longer than PATH_MAX", longHardlink, ErrUnsafeEntry},
		{"names adding up to too many bytes", manyNames, ErrMemberTooLarge},
		{"a layer name longer than PATH_MAX", append(append([]entry(nil), docker...), fileEntry("manifest.json", string(longName), 0o644)), ErrUnsafeEntry},
		{"a symlink that grows the path", append(append(append([]entry(nil), docker...), deep...), fileEntry("manifest.json", string(deepManifest), 0o644)), ErrUnsafeEntry},
	} {
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/gzip=%v", tc.name, gz), func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "x.tar")
				writeArchive(t, p, tc.entries, gz)
				s := newStore(t, nil)
				img, err := s.Import(context.Background(), p, nil)
				if !errors.Is(err, tc.want) {
					t.Errorf("Import: %v, want %v", err, tc.want)
				}
				checkImported(t, s, img, err)
			})
		}
	}
}

// A sparse member's bytes in the archive are not its contents, and no
// tool writes image archives with them: one is refused, not misread.
func TestImportArchiveRefusesSparseMembers(t *testing.T) {
	im := newArchiveImage(t)
	oci, _ := im.members(FormatOCILayout)
	var base []entry
	for _, e := range oci {
		if e.hdr.Name != "index.json" {
			base = append(base, e)
		}
	}
	plain := buildTar(t, base...)
	// The end-of-archive blocks of one tar, then another's members.
	archive := append(plain[:len(plain)-1024:len(plain)-1024], sparseTar("index.json", int64(len(im.index)), string(im.index))...)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			b := archive
			if gz {
				b = gzipBytes(t, b)
			}
			p := filepath.Join(t.TempDir(), "x.tar")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			s := newStore(t, nil)
			img, err := s.Import(context.Background(), p, nil)
			if !errors.Is(err, ErrUnsafeEntry) || !strings.Contains(err.Error(), "sparse") {
				t.Errorf("Import: %v, want the sparse index.json refused", err)
			}
			checkImported(t, s, img, err)
		})
	}
}

// An import source is a regular file or a directory: a FIFO or a device
// is refused at once instead of hanging the import or reading forever.
func TestImportRefusesSourcesThatAreNotFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{fifo, "/dev/zero"} {
		s := newStore(t, nil)
		img, err := s.Import(context.Background(), src, nil)
		if !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("Import(%s): %v, want ErrUnknownFormat", src, err)
		}
		checkImported(t, s, img, err)
	}
}

// A root filesystem may hold an index.json or a manifest.json of its own
// at its root: it imports as the one-layer image it is, those files in
// it, and only a docker archive's manifest.json makes it an archive,
// whose missing layers are then an error.
func TestImportRootfsTarWithImageFileNames(t *testing.T) {
	im := newArchiveImage(t)
	docker, roles := im.members(FormatDockerArchive)
	rootfs := []entry{dirEntry("bin/", 0o755), fileEntry("bin/true", "#!", 0o755)}
	for _, tc := range []struct {
		name   string
		extra  entry
		wantOK bool
	}{
		{"index.json", fileEntry("index.json", string(im.index), 0o644), true},
		{"oci-layout-less index.json first", fileEntry("index.json", `{"manifests":[]}`, 0o644), true},
		{"manifest.json", fileEntry("manifest.json", `{"name":"app"}`, 0o644), true},
		{"docker archive's manifest.json", docker[2], false},
	} {
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/gzip=%v", tc.name, gz), func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "x.tar")
				writeArchive(t, p, append([]entry{tc.extra}, rootfs...), gz)
				s := newStore(t, nil)
				img, err := s.Import(context.Background(), p, nil)
				checkImported(t, s, img, err)
				if !tc.wantOK {
					if !isNotFound(err) || !strings.Contains(err.Error(), roles["config"]) {
						t.Fatalf("Import: %v, want not found naming %s", err, roles["config"])
					}
					return
				}
				if err != nil {
					t.Fatalf("Import: %v", err)
				}
				r := prepare(t, s, "k", img)
				got, err := os.ReadFile(filepath.Join(r.Path, tc.extra.hdr.Name))
				if err != nil || string(got) != tc.extra.body {
					t.Errorf("/%s in the rootfs: %q, %v; want the tar's", tc.extra.hdr.Name, got, err)
				}
			})
		}
	}
}
