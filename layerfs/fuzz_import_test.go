package layerfs

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Placeholders that the import fuzz targets replace in their inputs by the
// digests of the blobs they write, which a fuzzer could never guess.
const (
	phManifest = "$MANIFEST" // the manifest's digest, sha256:<hex>
	phConfig   = "$CONFIG"   // the config's digest
	phLayer    = "$LAYER"    // the layer blob's digest
	phDiffID   = "$DIFFID"   // the layer's diff ID (the same: it is not compressed)
	// and their sizes, which descriptors must give right.
	phManifestSize = "$MSIZE"
	phConfigSize   = "$CSIZE"
	phLayerSize    = "$LSIZE"
)

func fuzzDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// fuzzLayer is the one small layer the import fuzz targets' images hold;
// unpacking itself is FuzzUnpackTar's business.
func fuzzLayer(t testing.TB) []byte {
	return buildTar(t, dirEntry("etc/", 0o755), fileEntry("etc/hostname", "fuzz\n", 0o644))
}

// makeSpecial makes the members that specials lists in dir, one a line:
// "NAME -> TARGET" a symlink, "NAME |" a FIFO, "NAME #" /dev/zero's
// device node, replacing any file of that name. Lines naming a path
// outside dir, or otherwise unusable, are skipped.
func makeSpecial(t *testing.T, dir, specials string) {
	for _, line := range strings.Split(specials, "\n") {
		name, target, link := strings.Cut(line, " -> ")
		if !link {
			name, _, _ = strings.Cut(line, " ")
		}
		name = filepath.Clean(name)
		if name == "." || !filepath.IsLocal(name) {
			continue
		}
		p := filepath.Join(dir, name)
		if os.MkdirAll(filepath.Dir(p), 0o755) != nil {
			continue
		}
		os.RemoveAll(p)
		switch {
		case link:
			os.Symlink(target, p)
		case strings.HasSuffix(line, " |"):
			unix.Mkfifo(p, 0o644)
		case strings.HasSuffix(line, " #"):
			unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5)))
		}
	}
}

// plantSecret copies the directories and regular files under src to dst,
// beside it, where members that escape src would lead, and sets their
// access times to the epoch, so that the filesystem's relatime marks any
// that is read or listed; checkSecret looks.
func plantSecret(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(q, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(q, b, 0o644)
		}
		return nil
	})
	// Deepest first, since listing a directory sets its access time.
	var paths []string
	if err == nil {
		err = filepath.WalkDir(dst, func(p string, _ os.DirEntry, err error) error {
			paths = append(paths, p)
			return err
		})
	}
	for i := len(paths) - 1; i >= 0 && err == nil; i-- {
		err = os.Chtimes(paths[i], time.Unix(0, 0), time.Now())
	}
	if err != nil {
		t.Fatal(err)
	}
}

// checkSecret fails t if anything under dst, made by plantSecret, was
// read or listed.
func checkSecret(t *testing.T, dst string, importErr error) {
	t.Helper()
	filepath.WalkDir(dst, func(p string, _ os.DirEntry, err error) error {
		var st unix.Stat_t
		if err == nil && unix.Lstat(p, &st) == nil && st.Atim.Sec != 0 {
			t.Errorf("import (err %v) read %s, outside what it imports", importErr, p)
		}
		return nil
	})
}

// checkImported checks what Import promises of an image it accepted: the
// store reads it back whole, with names that parse and a diff ID for each
// layer. Either way, no staging area is left behind.
func checkImported(t *testing.T, s *Store, img *Image, err error) {
	t.Helper()
	if err == nil {
		again, gerr := s.Image(context.Background(), img.Digest.String())
		switch {
		case gerr != nil:
			t.Fatalf("Import succeeded but the image does not load: %v", gerr)
		case len(again.Layers) != len(img.Config.RootFS.DiffIDs) || len(again.Layers) != len(img.Manifest.Layers):
			t.Errorf("image has %d layers, %d diff IDs, manifest %d", len(again.Layers), len(img.Config.RootFS.DiffIDs), len(img.Manifest.Layers))
		}
		for _, n := range img.Names {
			if names, err := nameList(n, "a name"); err != nil || names[0] != n {
				t.Errorf("imported image has name %q, not in canonical form: %v", n, err)
			}
		}
		for _, l := range again.Layers {
			if !exists(s.layerDir(l.DiffID)) {
				t.Errorf("layer %s is not unpacked", l.DiffID)
			}
		}
	}
	entries, rerr := os.ReadDir(s.path("tmp"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "stage-") {
			t.Errorf("Import (err %v) left staging area %s", err, e.Name())
		}
	}
}

// The first layout seed: a valid image.
const (
	defaultIndex    = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST","size":$MSIZE,"annotations":{"org.opencontainers.image.ref.name":"fuzz:1"}}]}`
	defaultManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$CONFIG","size":$CSIZE},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAYER","size":$LSIZE}]}`
	defaultConfig   = `{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["$DIFFID"]}}`
)

// FuzzImportLayout imports OCI image layouts made of a fuzzed index,
// manifest and config.
func FuzzImportLayout(f *testing.F) {
	for _, s := range [][3]string{
		{defaultIndex, defaultManifest, defaultConfig},
		// Two platforms, attestation, a nested index, a containerd name.
		{
			`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST","size":$MSIZE,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"docker.io/library/fuzz:latest"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST","size":$MSIZE,"platform":{"architecture":"unknown","os":"unknown"}},{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"$MANIFEST","size":$MSIZE}]}`,
			`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"$CONFIG","size":$CSIZE},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"$LAYER","size":$LSIZE},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAYER","size":$LSIZE}]}`,
			`{"rootfs":{"type":"layers","diff_ids":["$DIFFID","$DIFFID"]}}`,
		},
		// Hostile: digests that lead out of blobs/, wrong counts, bad types.
		{
			`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../../etc/passwd","size":-1}]}`,
			`{}`, `{}`,
		},
		{
			`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST","size":9223372036854775807}]}`,
			`{"config":{"digest":"$CONFIG"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAYER","size":-5}]}`,
			`{"rootfs":{"diff_ids":[]}}`,
		},
		{
			`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST"}]}`,
			`{"config":{"digest":"$CONFIG"},"layers":[{"mediaType":"text/plain","digest":"$LAYER"}]}`,
			`{"rootfs":{"diff_ids":["$DIFFID"]}}`,
		},
		{
			`{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"$MANIFEST"}]}`,
			`{"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"$MANIFEST"}]}`,
			`null`,
		},
		{`[]`, `null`, `"x"`},
		{`{"manifests":null}`, ``, ``},
		{`{"manifests":[{"digest":"sha256:` + strings.Repeat("0", 64) + `"}]}`, `{`, `{"rootfs":{"diff_ids":["sha256:` + strings.Repeat("f", 64) + `"]}}`},
		{
			`{"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST","annotations":{"org.opencontainers.image.ref.name":"` + strings.Repeat("a/", 100) + `a:x"}}]}`,
			`{"config":{"digest":"$CONFIG"},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"$LAYER"}]}`,
			`{"rootfs":{"diff_ids":["$DIFFID"]},"config":{"User":"\u0000","Env":["\u202e=1"]}}`,
		},
	} {
		f.Add(s[0], s[1], s[2], "")
	}
	// Index trees that are wide: the same nested index named many times
	// at each level, and more descriptors than Import walks.
	nested := func(digest string, n int) string {
		d := `{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"` + digest + `"}`
		return `{"manifests":[` + strings.TrimSuffix(strings.Repeat(d+",", n), ",") + `]}`
	}
	f.Add(nested(phManifest, 40), nested(phConfig, 40), `{"manifests":[],"rootfs":{"diff_ids":[]}}`, "")
	image := `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$MANIFEST","size":$MSIZE}`
	f.Add(`{"manifests":[`+strings.TrimSuffix(strings.Repeat(image+",", 5000), ",")+`]}`, defaultManifest, defaultConfig, "")
	// Members that are not regular files in the layout.
	f.Add(defaultIndex, defaultManifest, defaultConfig, "index.json -> ../secret/index.json")
	f.Add(defaultIndex, defaultManifest, defaultConfig, "blobs/sha256 -> ../../secret/blobs/sha256")
	f.Add(defaultIndex, defaultManifest, defaultConfig, "index.json |")
	f.Add(defaultIndex, defaultManifest, defaultConfig, "blobs -> ../secret")
	f.Add(defaultIndex, defaultManifest, defaultConfig, "blobs/sha256 -> /dev\nindex.json #")
	layer := fuzzLayer(f)
	f.Fuzz(func(t *testing.T, index, manifest, config, specials string) {
		dir := t.TempDir()
		layout := filepath.Join(dir, "layout")
		blobs := filepath.Join(layout, "blobs", "sha256")
		if err := os.MkdirAll(blobs, 0o755); err != nil {
			t.Fatal(err)
		}
		put := func(b []byte) string {
			d := fuzzDigest(b)
			if err := os.WriteFile(filepath.Join(blobs, strings.TrimPrefix(d, "sha256:")), b, 0o644); err != nil {
				t.Fatal(err)
			}
			return d
		}
		ld := put(layer)
		lsize := strconv.Itoa(len(layer))
		cb := []byte(strings.ReplaceAll(config, phDiffID, ld))
		cd, csize := put(cb), strconv.Itoa(len(cb))
		mb := []byte(strings.NewReplacer(phConfig, cd, phLayer, ld, phConfigSize, csize, phLayerSize, lsize).Replace(manifest))
		md, msize := put(mb), strconv.Itoa(len(mb))
		ib := strings.NewReplacer(phManifest, md, phConfig, cd, phLayer, ld, phManifestSize, msize, phConfigSize, csize, phLayerSize, lsize).Replace(index)
		if err := os.WriteFile(filepath.Join(layout, "index.json"), []byte(ib), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		secret := filepath.Join(dir, "secret")
		plantSecret(t, layout, secret)
		makeSpecial(t, layout, specials)
		s, err := Open(filepath.Join(dir, "store"), nil)
		if err != nil {
			t.Fatal(err)
		}
		img, err := s.Import(context.Background(), layout, nil)
		checkImported(t, s, img, err)
		checkSecret(t, secret, err)
	})
}

// FuzzImportDockerArchive imports `docker save` directories made of a
// fuzzed manifest.json and config.
func FuzzImportDockerArchive(f *testing.F) {
	for _, s := range [][2]string{
		{`[{"Config":"config.json","RepoTags":["fuzz:1","registry.local:5000/a/b:c"],"Layers":["layer.tar"]}]`,
			`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["$DIFFID"]}}`},
		{`[{"Config":"config.json","RepoTags":["UPPER:1","fuzz@sha256:` + strings.Repeat("a", 64) + `",""],"Layers":["layer.tar","./layer.tar"]}]`,
			`{"rootfs":{"diff_ids":["$DIFFID","$DIFFID"]}}`},
		{`[{"Config":"../secret/config.json","Layers":[]}]`, `{}`},
		{`[{"Config":"/etc/passwd","Layers":[]}]`, `{}`},
		{`[{"Config":"config.json","Layers":["../secret","/dev/zero"]}]`, `{"rootfs":{"diff_ids":["$DIFFID","$DIFFID"]}}`},
		{`[{"Config":"config.json","Layers":["a/../../secret"]}]`, `{"rootfs":{"diff_ids":["$DIFFID"]}}`},
		{`[{"Config":"config.json","Layers":["layer.tar"]},{"Config":"config.json","Layers":["layer.tar"]}]`, `{"rootfs":{"diff_ids":["$DIFFID"]}}`},
		{`[]`, `{}`}, {`{}`, `{}`}, {`[null]`, `null`}, {`[{"Config":""}]`, ``},
		{`[{"Config":"config.json","Layers":["layer.tar"]}]`, `{"rootfs":{"diff_ids":["sha256:` + strings.Repeat("0", 64) + `"]}}`},
	} {
		f.Add(s[0], s[1], "")
	}
	// Members that are not regular files in the archive.
	const manifest = `[{"Config":"config.json","RepoTags":["fuzz:1"],"Layers":["layer.tar"]}]`
	const config = `{"rootfs":{"type":"layers","diff_ids":["$DIFFID"]}}`
	for _, specials := range []string{
		"config.json -> ../secret/config.json", "config.json -> ../secret", "config.json -> /etc/hostname", "config.json |", "manifest.json |",
		"layer.tar #", "layer.tar -> /dev/zero", "layer.tar -> a/../layer2.tar", "a -> ..\nlayer.tar -> a/secret/layer.tar", "manifest.json -> ../secret/manifest.json",
	} {
		f.Add(manifest, config, specials)
	}
	layer := fuzzLayer(f)
	f.Fuzz(func(t *testing.T, manifest, config, specials string) {
		dir := t.TempDir()
		archive := filepath.Join(dir, "archive")
		if err := os.Mkdir(archive, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{
			"layer.tar":     string(layer),
			"config.json":   strings.ReplaceAll(config, phDiffID, fuzzDigest(layer)),
			"manifest.json": manifest,
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(archive, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		secret := filepath.Join(dir, "secret")
		plantSecret(t, archive, secret)
		makeSpecial(t, archive, specials)
		s, err := Open(filepath.Join(dir, "store"), nil)
		if err != nil {
			t.Fatal(err)
		}
		img, err := s.Import(context.Background(), archive, nil)
		checkImported(t, s, img, err)
		checkSecret(t, secret, err)
	})
}

// archiveSeeds returns tars for FuzzImportArchiveTar: every layout
// DetectFormat tells apart, and each member of an OCI layout and a docker
// archive replaced by what must not be read.
func archiveSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, tc := range detectCases(t) {
		var entries []entry
		for _, e := range tc.entries {
			if !isHuge(e) {
				entries = append(entries, e)
			}
		}
		seeds = append(seeds, buildTar(t, entries...))
	}
	im := newArchiveImage(t)
	for _, format := range []Format{FormatOCILayout, FormatDockerArchive} {
		base, roles := im.members(format)
		for _, name := range roles {
			dir := path.Dir(name) + "/"
			if dir == "./" {
				dir = ""
			}
			for _, e := range []entry{
				symlinkEntry(name, "/etc/passwd"),
				symlinkEntry(name, "../../../../../../../../etc/passwd"),
				symlinkEntry(name, "/dev/zero"),
				symlinkEntry(name, path.Base(name)),
				hardlinkEntry(name, "/etc/passwd"),
				hardlinkEntry(name, "../"+name),
				{hdr: tar.Header{Typeflag: tar.TypeChar, Name: name, Mode: 0o644, Devmajor: 1, Devminor: 5}},
				{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644}},
				dirEntry(name+"/", 0o755),
				symlinkEntry(dir, "/"),
				// Where the archive's own directory is, from where an
				// unpacking into the store's staging area would be.
				symlinkEntry(name, "../../../../secret"),
				symlinkEntry(name, "../../../../../secret"),
				hardlinkEntry(name, "../../../../secret"),
			} {
				seeds = append(seeds, buildTar(t, append(append([]entry(nil), base...), e)...))
			}
		}
		seeds = append(seeds, buildTar(t, base...))
		// Names and link targets longer than PATH_MAX.
		long := strings.Repeat("n", 4097)
		for _, e := range []entry{
			fileEntry("blobs/"+long, "", 0o644),
			symlinkEntry("blobs/l", long),
			hardlinkEntry("blobs/h", long),
		} {
			seeds = append(seeds, buildTar(t, append(append([]entry(nil), base...), e)...))
		}
	}
	return seeds
}

// FuzzImportArchiveTar imports fuzzed tars, plain and gzipped: image
// archives, root filesystems and what is neither.
func FuzzImportArchiveTar(f *testing.F) {
	for i, seed := range archiveSeeds(f) {
		f.Add(seed, i%4 == 0)
	}
	f.Fuzz(func(t *testing.T, archive []byte, gz bool) {
		dir := t.TempDir()
		if gz {
			archive = gzipBytes(t, archive)
		}
		p := filepath.Join(dir, "archive.tar")
		if err := os.WriteFile(p, archive, 0o644); err != nil {
			t.Fatal(err)
		}
		secret := plantFile(t, dir)
		s, err := Open(filepath.Join(dir, "store"), nil)
		if err != nil {
			t.Fatal(err)
		}
		img, err := s.Import(context.Background(), p, nil)
		checkImported(t, s, img, err)
		secret.check(t, err)
	})
}
