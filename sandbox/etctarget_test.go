package sandbox

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/security"
)

// Images whose /etc/resolv.conf, /etc/hosts or /etc/hostname is a
// symbolic link start, whatever the link leads to, and the workload
// reads and writes berth's files there. Where the link leads is resolved
// inside the rootfs: the host's files it names are neither read, made
// nor mounted over.
func TestEtcFilesBehindLinks(t *testing.T) {
	host := t.TempDir()
	hostSecret := filepath.Join(host, "secret")
	if err := os.WriteFile(hostSecret, []byte("HOST-SECRET\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostMissing := filepath.Join(host, "made-by-berth")
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	// up climbs out of /etc further than the rootfs goes.
	const up = "../../../../../../../.."
	// vol is a host directory bound into the sandbox, which a link in the
	// image names: nothing may be made in it.
	vol, err := os.MkdirTemp(testEnv.dir, "etc-vol-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(vol)
	if err := os.Chmod(vol, 0o755); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		links map[string]string
		extra []*tar.Header
		// also are paths in the sandbox that must show the bound file
		// too: where a followed link leads.
		also map[string]string
		// intact is a shell test of what the links must not have
		// changed in the sandbox.
		intact string
		// mounts are the sandbox's.
		mounts []Mount
	}{
		{name: "ubuntu-stub-resolver", links: map[string]string{"etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf"},
			also: map[string]string{"resolv.conf": "/run/systemd/resolve/stub-resolv.conf"}},
		{name: "absolute-dangling", links: map[string]string{"etc/hosts": "/var/lib/berth-missing/hosts"},
			also: map[string]string{"hosts": "/var/lib/berth-missing/hosts"}},
		{name: "through-image-link", links: map[string]string{"etc/hostname": "/var/run/hostname"},
			also: map[string]string{"hostname": "/run/hostname"}},
		{name: "image-file", links: map[string]string{"etc/resolv.conf": "alpine-release"},
			also: map[string]string{"resolv.conf": "/etc/alpine-release"}},
		{name: "outside-rootfs", links: map[string]string{
			"etc/resolv.conf": up + hostSecret,
			"etc/hosts":       hostSecret,
			"etc/hostname":    up + hostMissing,
		}},
		// As under Docker, a link to a file of the image's binds over
		// it: here the image's /etc/shadow, never the host's.
		{name: "image-shadow", links: map[string]string{"etc/resolv.conf": "../../../../etc/shadow"},
			also: map[string]string{"resolv.conf": "/etc/shadow"}},
		{name: "into-a-volume", links: map[string]string{"etc/resolv.conf": "/data/resolv.conf", "etc/hosts": "../data/sub/hosts"},
			mounts: []Mount{{Source: vol, Destination: "/data"}}},
		{name: "into-a-tmpfs", links: map[string]string{"etc/hostname": "/run/hostname"},
			mounts: []Mount{{Type: "tmpfs", Destination: "/run"}}},
		{name: "loops", links: map[string]string{"etc/resolv.conf": "resolv.conf", "etc/hosts": "hosts.2", "etc/hosts.2": "hosts"}},
		{name: "directories", links: map[string]string{"etc/resolv.conf": "/usr", "etc/hosts": ".", "etc/hostname": up}},
		{name: "proc", links: map[string]string{"etc/resolv.conf": "/proc/self/environ"},
			intact: `! grep -q berth-marker /proc/self/environ`},
		{name: "sys", links: map[string]string{"etc/hosts": "../sys/kernel/hostname-berth"},
			intact: `test ! -e /sys/kernel/hostname-berth`},
		{name: "dev", links: map[string]string{"etc/hostname": "/dev/null"},
			intact: `test -c /dev/null`},
		{name: "dev-missing", links: map[string]string{"etc/hostname": "/dev/berth/hostname"},
			intact: `test ! -e /dev/berth`},
		{name: "each-other", links: map[string]string{"etc/hosts": "resolv.conf", "etc/resolv.conf": "hostname"}},
		{name: "below-a-file", links: map[string]string{"etc/resolv.conf": "/bin/busybox/resolv.conf"}},
		{name: "fifo", links: map[string]string{"etc/resolv.conf": "/etc/fifo"},
			extra: []*tar.Header{{Typeflag: tar.TypeFifo, Name: "etc/fifo", Mode: 0o644}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := "alpine-etc-" + c.name + ":test"
			entries := append(testenv.Symlinks(c.links), c.extra...)
			if err := testenv.ImportAlpineWith(context.Background(), testEnv.store, ref, entries...); err != nil {
				t.Fatal(err)
			}
			for _, p := range etcPresets {
				t.Run(p.name, func(t *testing.T) { testEtcLinks(t, ref, p.sec(), c.mounts, c.also, c.intact) })
			}
		})
	}
	if got, err := os.ReadFile(hostSecret); err != nil || string(got) != "HOST-SECRET\n" {
		t.Errorf("the host's file now reads %q (%v)", got, err)
	}
	if _, err := os.Lstat(hostMissing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a sandbox's start made %s on the host (%v)", hostMissing, err)
	}
	if got, err := os.ReadFile("/etc/shadow"); err != nil || !bytes.Equal(got, shadow) {
		t.Errorf("the host's /etc/shadow changed (%v)", err)
	}
	if left, err := os.ReadDir(vol); err != nil || len(left) > 0 {
		t.Errorf("a sandbox's start made %v in the volume (%v)", left, err)
	}
}

// A mount of the caller's over /etc itself hides the etc files, as it
// always has, and the sandbox starts.
func TestEtcFilesUnderCallersMount(t *testing.T) {
	var out bytes.Buffer
	res, err := New("alpine:test", opts(func(o *Options) {
		o.Mounts = []Mount{{Type: "tmpfs", Destination: "/etc"}}
		o.Args = []string{"ls", "-A", "/etc"}
		o.Stdout = &out
	})).Run(context.Background())
	if err != nil || !res.Success() || out.String() != "" {
		t.Errorf("with a tmpfs at /etc: %+v %v, /etc holds %q", res, err, out.String())
	}
}

// testEtcLinks runs a sandbox of image ref under sec, with mounts, and
// checks that /etc's files in it, and the paths of also (by file), are
// berth's: the same files, which show what the host wrote there, and
// (where the workload may write them) what it writes. The shell test
// intact must hold in it.
func testEtcLinks(t *testing.T, ref string, sec *security.Config, mounts []Mount, also map[string]string, intact string) {
	ctx := context.Background()
	sb := New(ref, opts(func(o *Options) {
		o.Args = []string{"sleep", "1000"}
		o.Security = sec
		o.Mounts = mounts
	}))
	if err := sb.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	defer sb.Close()
	// Strict's root does not own the files and may not write them.
	writable := sec.UserNamespace == nil
	var script strings.Builder
	if writable {
		script.WriteString(`for f in hosts hostname resolv.conf; do echo "berth-marker-$f" >> /etc/$f || exit 1; done` + "\n")
	}
	if intact != "" {
		fmt.Fprintf(&script, "%s || echo 'BROKEN: %s'\n", intact, strings.ReplaceAll(intact, "'", ""))
	}
	paths := map[string]string{}
	for _, f := range etcFiles {
		paths["/etc/"+f] = f
	}
	for f, p := range also {
		paths[p] = f
	}
	for p := range paths {
		fmt.Fprintf(&script, "echo '== %[1]s'; cat %[1]s; echo '== id %[1]s'; stat -L -c %%d:%%i %[1]s\n", p)
	}
	var stdout, stderr bytes.Buffer
	res, err := sb.Exec(ctx, &ExecOptions{Args: []string{"sh", "-c", script.String()}, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success() {
		t.Fatalf("exit %d: %s", res.ExitCode, stderr.String())
	}
	out := stdout.String()
	sections := splitSections(out)
	for p, f := range paths {
		host := etcFile(sb.stateDir(), f)
		content, err := os.ReadFile(host)
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(host, &st); err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(sections["id "+p]), fmt.Sprintf("%d:%d", st.Dev, st.Ino); got != want {
			t.Errorf("%s in the sandbox is file %s, not berth's %s %s", p, got, f, want)
		}
		if got := sections[p]; got != string(content) {
			t.Errorf("the workload reads %q at %s, not berth's %s %q", got, p, f, content)
		}
		if writable && !strings.Contains(string(content), "berth-marker-"+f+"\n") {
			t.Errorf("berth's %s on the host does not hold what the workload wrote to /etc/%s: %q", f, f, content)
		}
	}
	if strings.Contains(out, "BROKEN") {
		t.Errorf("the links changed what they must not:\n%s", out)
	}
	if strings.Contains(out, "HOST-SECRET") {
		t.Errorf("the workload read the host's file:\n%s", out)
	}
}

// splitSections splits a probe's output into the text after each
// "== NAME" line, by name.
func splitSections(out string) map[string]string {
	sections := map[string]string{}
	var name string
	var body strings.Builder
	flush := func() {
		if name != "" {
			sections[name] = body.String()
		}
		body.Reset()
	}
	for _, line := range strings.SplitAfter(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "== "); ok {
			flush()
			name = strings.TrimSuffix(rest, "\n")
			continue
		}
		body.WriteString(line)
	}
	flush()
	return sections
}
