package registry

import (
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/layerfs"
)

func TestStoreName(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                                   "busybox:latest",
		"busybox:1.38":                              "busybox:1.38",
		"library/busybox:1":                         "busybox:1",
		"docker.io/library/busybox":                 "busybox:latest",
		"index.docker.io/team/app:2":                "team/app:2",
		"127.0.0.1:5000/x/busybox":                  "127.0.0.1:5000/x/busybox:latest",
		"localhost:5000/busybox:1":                  "localhost:5000/busybox:1",
		"ghcr.io/org/tool:v1":                       "ghcr.io/org/tool:v1",
		"busybox@sha256:" + strings.Repeat("a", 64): "",
	} {
		ref, err := parseReference(in, false)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := storeName(ref); got != want {
			t.Errorf("storeName(%s) = %q, want %q", in, got, want)
		}
		if want != "" {
			// What the store keeps is what it parses back to.
			if r, err := layerfs.ParseReference(want); err != nil || r.String() != want {
				t.Errorf("store name %q does not round-trip: %v", want, err)
			}
		}
	}
}

func TestParseReferenceRefuses(t *testing.T) {
	// Some of these the remote package would take: the store could not
	// name what they pull.
	for _, in := range []string{"", "UPPER/case", "x:bad tag", "x@sha256:short", strings.Repeat("a", 600), "team/a..b:1", "team/-x:1"} {
		if _, err := parseReference(in, false); !errors.Is(err, layerfs.ErrInvalidReference) {
			t.Errorf("parseReference(%q) = %v, want ErrInvalidReference", in, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "LOCALHOST": true, "127.0.0.1:5000": true, "127.9.9.9": true, "[::1]:5000": true,
		"10.0.0.1:5000": false, "192.168.1.1": false, "registry.local": false, "localhost.example.com": false,
		"docker.io": false, "[::2]:5000": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", host, got, want)
		}
	}
}

func TestChoosePlatform(t *testing.T) {
	index := func(platforms ...string) []v1.Descriptor {
		var ds []v1.Descriptor
		for i, p := range platforms {
			pl, err := v1.ParsePlatform(p)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: pl, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(rune('a'+i)), 64)}})
		}
		return ds
	}
	for _, tc := range []struct {
		index []string
		want  string
		pick  int // index of the one chosen; -1 for none
	}{
		{[]string{"linux/arm64/v8", "linux/amd64"}, "linux/amd64", 1},
		{[]string{"linux/amd64/v3", "linux/amd64"}, "linux/amd64", 1},
		{[]string{"linux/amd64/v3"}, "linux/amd64", 0},
		{[]string{"linux/amd64"}, "linux/amd64/v3", -1},
		{[]string{"linux/arm64/v8"}, "linux/arm64", 0},
		{[]string{"linux/arm64"}, "linux/arm64/v8", 0},
		{[]string{"linux/arm/v5", "linux/arm/v7", "linux/arm/v6"}, "linux/arm/v7", 1},
		{[]string{"linux/arm/v5", "linux/arm/v6"}, "linux/arm/v7", 1},
		{[]string{"linux/arm/v7"}, "linux/arm/v6", -1},
		{[]string{"windows/amd64", "linux/s390x"}, "linux/amd64", -1},
	} {
		want, _ := v1.ParsePlatform(tc.want)
		d, err := choosePlatform(index(tc.index...), *want)
		switch {
		case tc.pick < 0 && !errors.Is(err, ErrNoPlatform):
			t.Errorf("%s from %q: chose %v, err %v; want ErrNoPlatform", tc.want, tc.index, d.Platform, err)
		case tc.pick >= 0 && (err != nil || d.Digest != index(tc.index...)[tc.pick].Digest):
			t.Errorf("%s from %q: chose %v, err %v; want %s", tc.want, tc.index, d.Platform, err, tc.index[tc.pick])
		}
	}
}
