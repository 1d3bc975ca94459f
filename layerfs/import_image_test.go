package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// craftedImage is an image whose manifest, config and layer blobs a test
// sets, as a hostile registry could; it counts the blobs read.
type craftedImage struct {
	v1.Image
	manifest, config []byte
	blobs            map[v1.Hash][]byte
	configReads      int
	layerReads       int
}

func (c *craftedImage) RawManifest() ([]byte, error) { return c.manifest, nil }
func (c *craftedImage) RawConfigFile() ([]byte, error) {
	c.configReads++
	return c.config, nil
}

func (c *craftedImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	b, ok := c.blobs[h]
	if !ok {
		return nil, errors.New("no such blob")
	}
	return blobLayer{c: c, b: b}, nil
}

type blobLayer struct {
	v1.Layer
	c *craftedImage
	b []byte
}

func (l blobLayer) Compressed() (io.ReadCloser, error) {
	l.c.layerReads++
	return io.NopCloser(bytes.NewReader(l.b)), nil
}

// craft returns an image of one random layer, its manifest and config
// changed by edit before they are encoded.
func craft(t *testing.T, edit func(m *v1.Manifest, cfg *v1.ConfigFile, blobs map[v1.Hash][]byte)) *craftedImage {
	t.Helper()
	img, err := random.Image(2048, 1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[v1.Hash][]byte{}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		blobs[d] = b
	}
	if edit != nil {
		edit(m, cfg, blobs)
	}
	c := &craftedImage{Image: img, blobs: blobs}
	c.config, _ = json.Marshal(cfg)
	if m.Config.Size < configDocument.max {
		m.Config.Digest, m.Config.Size = sha256Hash(c.config), int64(len(c.config))
	}
	c.manifest, _ = json.Marshal(m)
	return c
}

func TestImportImage(t *testing.T) {
	s := newStore(t, nil)
	c := craft(t, nil)
	img, err := s.ImportImage(context.Background(), c, &ImportOptions{Name: "registry.example/crafted:1"})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != sha256Hash(c.manifest) || !bytes.Equal(img.RawConfig, c.config) {
		t.Errorf("stored image %s is not the one served (%s)", img.Digest, sha256Hash(c.manifest))
	}
	if !exists(s.layerDir(img.Layers[0].DiffID)) {
		t.Error("layer not unpacked")
	}
	var events []BlobProgress
	if _, err := s.ImportImage(context.Background(), c, &ImportOptions{BlobProgress: func(p BlobProgress) { events = append(events, p) }}); err != nil {
		t.Fatal(err)
	}
	if c.layerReads != 1 || len(events) != 1 || !events[0].Skipped {
		t.Errorf("second import read the layer %d times in all, reported %+v; want it skipped", c.layerReads, events)
	}
}

// TestImportImageRefuses offers images a hostile registry could serve:
// each is refused, with nothing left in the store and, where the
// descriptors give it away, before any layer is read.
func TestImportImageRefuses(t *testing.T) {
	for _, tc := range []struct {
		name      string
		edit      func(m *v1.Manifest, cfg *v1.ConfigFile, blobs map[v1.Hash][]byte)
		manifest  string // replaces the manifest, if set
		want      error
		mayRead   bool // whether the layer may be read before the refusal
		noConfig  bool // whether the config must not even be read
		errSubstr string
	}{
		{name: "foreign layer", edit: func(m *v1.Manifest, _ *v1.ConfigFile, _ map[v1.Hash][]byte) {
			m.Layers[0].MediaType = types.DockerForeignLayer
			m.Layers[0].URLs = []string{"https://elsewhere.example/layer"}
		}, want: ErrUnsupportedImage, errSubstr: "foreign"},
		{name: "urls on a layer", edit: func(m *v1.Manifest, _ *v1.ConfigFile, _ map[v1.Hash][]byte) {
			m.Layers[0].URLs = []string{"https://elsewhere.example/layer"}
		}, want: ErrUnsupportedImage},
		{name: "config as layer", edit: func(m *v1.Manifest, _ *v1.ConfigFile, _ map[v1.Hash][]byte) {
			m.Layers[0].MediaType = types.OCIConfigJSON
		}, want: ErrUnsupportedImage},
		{name: "artifact", edit: func(m *v1.Manifest, _ *v1.ConfigFile, _ map[v1.Hash][]byte) {
			m.Config.MediaType = "application/vnd.cncf.helm.config.v1+json"
		}, want: ErrUnsupportedImage, noConfig: true, errSubstr: "not a container image"},
		{name: "huge config", edit: func(m *v1.Manifest, _ *v1.ConfigFile, _ map[v1.Hash][]byte) {
			m.Config.Size = 10 << 30
		}, want: ErrMemberTooLarge, noConfig: true},
		{name: "diff ID count", edit: func(_ *v1.Manifest, cfg *v1.ConfigFile, _ map[v1.Hash][]byte) {
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, cfg.RootFS.DiffIDs[0])
		}, errSubstr: "diff IDs"},
		{name: "wrong diff ID", edit: func(_ *v1.Manifest, cfg *v1.ConfigFile, _ map[v1.Hash][]byte) {
			cfg.RootFS.DiffIDs[0] = sha256Hash([]byte("something else"))
		}, want: ErrDigestMismatch, mayRead: true},
		{name: "corrupt blob", edit: func(m *v1.Manifest, _ *v1.ConfigFile, blobs map[v1.Hash][]byte) {
			b := blobs[m.Layers[0].Digest]
			b[len(b)-10] ^= 0xff
		}, want: ErrDigestMismatch, mayRead: true},
		{name: "blob longer than its descriptor", edit: func(m *v1.Manifest, _ *v1.ConfigFile, blobs map[v1.Hash][]byte) {
			d := m.Layers[0].Digest
			blobs[d] = append(blobs[d], make([]byte, 1<<20)...)
		}, want: ErrDigestMismatch, mayRead: true, errSubstr: "longer than its descriptor"},
		{name: "blob shorter than its descriptor", edit: func(m *v1.Manifest, _ *v1.ConfigFile, blobs map[v1.Hash][]byte) {
			d := m.Layers[0].Digest
			blobs[d] = blobs[d][:len(blobs[d])/2]
		}, mayRead: true, errSubstr: "descriptor says"},
		{name: "sha512 layer", edit: func(m *v1.Manifest, _ *v1.ConfigFile, _ map[v1.Hash][]byte) {
			m.Layers[0].Digest = v1.Hash{Algorithm: "sha512", Hex: strings.Repeat("ab", 64)}
		}, want: ErrUnsupportedImage},
		{name: "schema 1", manifest: `{"schemaVersion":1,"name":"x","tag":"1","fsLayers":[]}`, want: ErrUnsupportedImage, noConfig: true, errSubstr: "schema 1"},
		{name: "index", manifest: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, want: ErrUnsupportedImage, noConfig: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, nil)
			c := craft(t, tc.edit)
			if tc.manifest != "" {
				c.manifest = []byte(tc.manifest)
			}
			_, err := s.ImportImage(context.Background(), c, &ImportOptions{Name: "crafted:1"})
			switch {
			case err == nil:
				t.Fatal("imported")
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Errorf("error %v, want %v", err, tc.want)
			case !strings.Contains(err.Error(), tc.errSubstr):
				t.Errorf("error %v does not say %q", err, tc.errSubstr)
			}
			if c.layerReads > 0 && !tc.mayRead {
				t.Errorf("a layer was read before the image was refused")
			}
			if c.configReads > 0 && tc.noConfig {
				t.Errorf("the config was read before the image was refused")
			}
			imgs, _ := s.Images(context.Background())
			if len(imgs) != 0 {
				t.Errorf("store holds %d images", len(imgs))
			}
			for _, dir := range []string{"tmp", "images"} {
				if entries, _ := os.ReadDir(s.path(dir)); len(entries) != 0 {
					t.Errorf("%s holds %d entries", dir, len(entries))
				}
			}
		})
	}
}

// TestImportImageLimits imports an image whose layer unpacks to more
// than the store's MaxImportSize, though its blob is within it.
func TestImportImageLimits(t *testing.T) {
	c := craft(t, func(m *v1.Manifest, _ *v1.ConfigFile, blobs map[v1.Hash][]byte) {
		// A gzip of 1 MiB of zeros is a few kilobytes.
		var tarball bytes.Buffer
		tw := tar.NewWriter(&tarball)
		tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg})
		tw.Write(make([]byte, 1<<20))
		tw.Close()
		blob := gzipBytes(t, tarball.Bytes())
		delete(blobs, m.Layers[0].Digest)
		m.Layers[0].Digest, m.Layers[0].Size = sha256Hash(blob), int64(len(blob))
		blobs[m.Layers[0].Digest] = blob
	})
	// The diff ID does not matter: the limit stops the unpack first.
	s := newStore(t, &Options{MaxImportSize: 64 << 10})
	_, err := s.ImportImage(context.Background(), c, nil)
	if !errors.Is(err, ErrImportTooLarge) {
		t.Fatalf("import of a layer over the limit: %v, want ErrImportTooLarge", err)
	}
	for _, dir := range []string{"tmp", "images", "layers"} {
		if entries, _ := os.ReadDir(s.path(dir)); len(entries) != 0 {
			t.Errorf("%s holds %d entries", dir, len(entries))
		}
	}
}
