package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-dev/berth/sandbox"
)

func TestParseVolume(t *testing.T) {
	// A relative source is taken from the working directory as the
	// kernel names it: entered through a link, the link is not in it.
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	t.Chdir(link)
	t.Setenv("PWD", link)

	for _, c := range []struct {
		in   string
		want sandbox.Mount
	}{
		{"/src:/dst", sandbox.Mount{Type: "bind", Source: "/src", Destination: "/dst"}},
		{"/src:/dst:ro", sandbox.Mount{Type: "bind", Source: "/src", Destination: "/dst", ReadOnly: true}},
		{"/src:/dst:ro,suid,dev", sandbox.Mount{Type: "bind", Source: "/src", Destination: "/dst", ReadOnly: true, Options: "suid,dev"}},
		{"/src:/dst:noexec,rw", sandbox.Mount{Type: "bind", Source: "/src", Destination: "/dst", Options: "noexec"}},
		{"data:/dst:dev", sandbox.Mount{Type: "volume", Source: "data", Destination: "/dst", Options: "dev"}},
		{"./sub:/dst", sandbox.Mount{Type: "bind", Source: filepath.Join(real, "sub"), Destination: "/dst"}},
	} {
		got, err := parseVolume(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if d := cmp.Diff(c.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.in, d)
		}
	}
	for _, c := range []struct{ in, err string }{
		{"nocolon", "SRC:DST"},
		{"/src:/dst:rw,setuid", `option "setuid"`},
		{"/a:/b:ro:x", "SRC:DST"},
	} {
		if _, err := parseVolume(c.in); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v, want an error saying %q", c.in, err, c.err)
		}
	}
}
