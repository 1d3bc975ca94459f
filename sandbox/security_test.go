package sandbox

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/security"
)

func TestExtraFiles(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, _, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.ExtraFiles = []*os.File{w}
		o.Args = []string{"/bin/sh", "-c", "echo through-fd-3 >&3; ls /proc/self/fd | tr '\\n' ' '"}
	}))
	w.Close()
	got, _ := io.ReadAll(r)
	if !res.Success() || string(got) != "through-fd-3\n" {
		t.Errorf("fd 3 carried %q (%+v)", got, res)
	}
}

// Landlock confines the workload to its own tree: a descriptor to a host
// directory, passed in on purpose here, opens nothing under Landlock but
// does without it.
func TestLandlockConfinesToTree(t *testing.T) {
	if security.LandlockFSAccess() == 0 {
		t.Skip("Landlock is not available on this kernel")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, landlock := range []bool{false, true} {
		sec := security.Default()
		sec.Landlock = landlock
		_, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
			o.Security = sec
			o.ExtraFiles = []*os.File{f}
			o.Args = []string{"/bin/sh", "-c", "cat /proc/self/fd/3/secret; cat /etc/alpine-release; echo x > /tmp/inside && cat /tmp/inside"}
		}))
		if !landlock {
			if out != "host secret\n3.20.3\nx\n" {
				t.Errorf("without Landlock: %q %q", out, errOut)
			}
			continue
		}
		if out != "3.20.3\nx\n" || !strings.Contains(errOut, "Permission denied") {
			t.Errorf("with Landlock: stdout %q, stderr %q", out, errOut)
		}
	}
}
