package layerfs

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An archive is untrusted: its members may be symlinks, FIFOs or device
// nodes, which the import must not follow out of the archive, block on, or
// read from the host's devices.
func TestImportRefusesMembersThatAreNotFiles(t *testing.T) {
	layer := buildTar(t, fileEntry("etc/hostname", "x\n", 0o644))
	diffID := digestBytes(layer).String()
	config := `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + diffID + `"]}}`
	// Member names that DetectFormat takes for a docker archive's.
	// The config is named by its digest, which the import checks.
	cfgName, layerName := digestBytes([]byte(config)).Hex+".json", strings.Repeat("a", 64)+"/layer.tar"
	manifest := `[{"Config":"` + cfgName + `","RepoTags":["members:test"],"Layers":["` + layerName + `"]}]`

	// A config outside the archive that a symlink in it points at; the
	// import would succeed if it followed the link.
	outside := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(outside, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := func(name string, typ byte, major, minor int64) entry {
		return entry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o644, Devmajor: major, Devminor: minor, ModTime: testTime}}
	}
	tests := []struct {
		name    string
		members []entry
	}{
		{"config symlinked out of the archive", []entry{symlinkEntry(cfgName, outside)}},
		{"config symlinked up and out", []entry{symlinkEntry(cfgName, "../../../../../../../.."+outside)}},
		{"config a FIFO", []entry{dev(cfgName, tar.TypeFifo, 0, 0)}},
		{"manifest a FIFO", []entry{dev("manifest.json", tar.TypeFifo, 0, 0), fileEntry(cfgName, config, 0o644)}},
		{"layer /dev/zero", []entry{fileEntry(cfgName, config, 0o644), dev(layerName, tar.TypeChar, 1, 5)}},
		{"layer symlinked to /dev/zero", []entry{fileEntry(cfgName, config, 0o644), symlinkEntry(layerName, "/dev/zero")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := []entry{fileEntry("manifest.json", manifest, 0o644), fileEntry(layerName, string(layer), 0o644), fileEntry(cfgName, config, 0o644)}
			// Later members replace earlier ones of the same name.
			entries = append(entries, tt.members...)
			archive := filepath.Join(t.TempDir(), "archive.tar")
			if err := os.WriteFile(archive, buildTar(t, entries...), 0o644); err != nil {
				t.Fatal(err)
			}
			s := newStore(t, nil)
			_, err := s.Import(context.Background(), archive, nil)
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("Import: %v, want ErrUnsafeEntry", err)
			}
		})
	}

	// A symlink that stays inside the archive, as older `docker save`
	// wrote between identical layers, is fine.
	entries := []entry{fileEntry("manifest.json", manifest, 0o644), fileEntry(cfgName, config, 0o644),
		fileEntry(strings.Repeat("b", 64)+"/layer.tar", string(layer), 0o644), symlinkEntry(layerName, "../"+strings.Repeat("b", 64)+"/layer.tar")}
	archive := filepath.Join(t.TempDir(), "archive.tar")
	if err := os.WriteFile(archive, buildTar(t, entries...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newStore(t, nil).Import(context.Background(), archive, nil); err != nil {
		t.Errorf("Import of an archive with a symlink inside it: %v", err)
	}
}

// The same holds for an OCI layout's index and blobs.
func TestImportLayoutRefusesBlobsThatAreNotFiles(t *testing.T) {
	src := t.TempDir()
	md := writeLayout(t, src, "members:test", false, buildTar(t, fileEntry("x", "y", 0o644)))
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var base []entry
	filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(src, p)
			base = append(base, fileEntry(rel, read(rel), 0o644))
		}
		return nil
	})
	manifest := "blobs/sha256/" + md.Hex
	for name, e := range map[string]entry{
		"manifest a FIFO":            {hdr: tar.Header{Typeflag: tar.TypeFifo, Name: manifest, Mode: 0o644}},
		"manifest /dev/zero":         {hdr: tar.Header{Typeflag: tar.TypeChar, Name: manifest, Mode: 0o644, Devmajor: 1, Devminor: 5}},
		"index symlinked out":        symlinkEntry("index.json", filepath.Join(src, "index.json")),
		"blobs symlinked to the src": symlinkEntry("blobs", filepath.Join(src, "blobs")),
	} {
		t.Run(name, func(t *testing.T) {
			entries := append(append([]entry(nil), base...), e)
			if strings.HasPrefix(name, "blobs") {
				entries = []entry{fileEntry("oci-layout", read("oci-layout"), 0o644), fileEntry("index.json", read("index.json"), 0o644), e}
			}
			archive := filepath.Join(t.TempDir(), "layout.tar")
			if err := os.WriteFile(archive, buildTar(t, entries...), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := newStore(t, nil).Import(context.Background(), archive, nil)
			if !errors.Is(err, ErrUnsafeEntry) {
				t.Errorf("Import: %v, want ErrUnsafeEntry", err)
			}
		})
	}
}
