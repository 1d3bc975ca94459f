package sandbox

import (
	"bytes"
	"context"
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

// searchableTempDir is a t.TempDir that root of a user namespace (an
// ordinary id on the host) can reach.
func searchableTempDir(t *testing.T) string {
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestStrict(t *testing.T) {
	dir := searchableTempDir(t)
	owned := filepath.Join(dir, "owned-by-host-root")
	if err := os.WriteFile(owned, []byte("original\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer secret.Close()
	script := `grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
		cat /proc/self/fd/3/owned-by-host-root >/dev/null 2>&1 && echo "read through fd 3" || echo "fd 3 opens nothing"
		cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'
		id -u
		echo changed > /host/owned-by-host-root 2>/dev/null && echo "wrote host root's file" || echo "cannot write host root's file"
		touch /etc/x 2>/dev/null && echo "rootfs writable" || echo "rootfs read-only"
		echo t > /tmp/t && cat /tmp/t`
	// Under Default, root in the sandbox is root on the host: it may.
	_, out, _ := run(t, "alpine:test", opts(func(o *Options) {
		o.ExtraFiles = []*os.File{secret}
		o.Mounts = []Mount{{Source: dir, Destination: "/host"}}
		o.Args = []string{"/bin/sh", "-c", script}
	}))
	if !strings.Contains(out, "wrote host root's file") || !strings.Contains(out, "read through fd 3") {
		t.Fatalf("under Default: %q", out)
	}
	os.WriteFile(owned, []byte("original\n"), 0o644)

	res, out, errOut := run(t, "alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.ExtraFiles = []*os.File{secret}
		o.Mounts = []Mount{{Source: dir, Destination: "/host"}}
		o.Args = []string{"/bin/sh", "-c", script}
	}))
	want := "CapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\nfd 3 opens nothing\n0 100000 65536\n0\ncannot write host root's file\nrootfs read-only\nt\n"
	if !res.Success() || out != want {
		t.Errorf("under Strict:\n%s\nwant\n%s\n(stderr %q)", out, want, errOut)
	}
	if b, _ := os.ReadFile(owned); string(b) != "original\n" {
		t.Errorf("host file changed: %q", b)
	}
}

func TestExecInStrict(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) {
		o.Security = security.Strict()
		o.Args = []string{"sleep", "100"}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	var out bytes.Buffer
	res, err := sb.Exec(context.Background(), &ExecOptions{
		Args:   []string{"/bin/sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status; cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; echo x > /etc/x 2>/dev/null || echo ro"},
		Stdout: &out,
	})
	if err != nil || !res.Success() {
		t.Fatalf("%+v %v", res, err)
	}
	if want := "0\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n0 100000 65536\nro\n"; out.String() != want {
		t.Errorf("exec in a Strict sandbox saw\n%s\nwant\n%s", out.String(), want)
	}
}
