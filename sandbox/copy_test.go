package sandbox

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/security"
)

// sleeper starts a sandbox whose workload sleeps, for a test to copy in
// and out of.
func sleeper(t *testing.T, extra func(*Options)) *Sandbox {
	t.Helper()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"sleep", "1000"}
		if extra != nil {
			extra(o)
		}
	}))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	return sb
}

// inside runs script in sb and returns its output; it must succeed.
func inside(t *testing.T, sb *Sandbox, script string) string {
	t.Helper()
	var out bytes.Buffer
	res, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &out})
	if err != nil || !res.Success() {
		t.Fatalf("%s: %+v %v\n%s", script, res, err, out.String())
	}
	return out.String()
}

// hostCanary makes a host file whose content no copy may read or change,
// and returns its path and a check that it is as made.
func hostCanary(t *testing.T) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "shadow")
	if err := os.WriteFile(p, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, func() {
		t.Helper()
		entries, _ := os.ReadDir(dir)
		if b, err := os.ReadFile(p); err != nil || string(b) != "host secret\n" || len(entries) != 1 {
			t.Errorf("the host's canary changed: %q %v, %d entries", b, err, len(entries))
		}
	}
}

func writeHost(t *testing.T, p, content string) string {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCopyPlantedLinks has the workload plant links to a host file
// (absolute, through /proc/1/root, and climbing with ..): copied out,
// they are links; followed, they lead to the sandbox's own file of that
// name; copied onto, they are replaced inside the sandbox.
func TestCopyPlantedLinks(t *testing.T) {
	canary, untouched := hostCanary(t)
	sb := sleeper(t, nil)
	inside(t, sb, fmt.Sprintf(`mkdir -p %[2]s && echo inside > %[1]s && ln -s %[1]s /out && ln -s /proc/1/root%[1]s /out2 && ln -s ../../../../../..%[1]s /out3`, canary, filepath.Dir(canary)))
	ctx := context.Background()
	host := t.TempDir()
	for _, link := range []string{"/out", "/out2", "/out3"} {
		want, _ := map[string]string{"/out": canary, "/out2": "/proc/1/root" + canary, "/out3": "../../../../../.." + canary}[link]
		dst := filepath.Join(host, link[1:])
		if err := sb.CopyFrom(ctx, link, dst, nil); err != nil {
			t.Fatalf("copy %s out: %v", link, err)
		}
		if got, err := os.Readlink(dst); err != nil || got != want {
			t.Errorf("%s copied out: link to %q (%v), want one to %q", link, got, err, want)
		}
		err := sb.CopyFrom(ctx, link, dst+"-L", &CopyOptions{FollowLink: true})
		got, _ := os.ReadFile(dst + "-L")
		// /proc/1/root, seen from the sandbox, is its own root.
		if err != nil || string(got) != "inside\n" {
			t.Errorf("%s followed: %q %v, want the sandbox's own file", link, got, err)
		}
		var tarOut bytes.Buffer
		if err := sb.CopyFromTar(ctx, link, &tarOut, &CopyOptions{FollowLink: true}); err == nil && strings.Contains(tarOut.String(), "host secret") {
			t.Errorf("%s as a tar holds the host's file", link)
		}
		if err := sb.CopyTo(ctx, writeHost(t, filepath.Join(host, "new"), "new\n"), link, nil); err != nil {
			t.Fatalf("copy onto %s: %v", link, err)
		}
		if out := inside(t, sb, "[ -L "+link+" ] && echo link; cat "+link); out != "new\n" {
			t.Errorf("%s after a copy onto it: %q", link, out)
		}
	}
	if out := inside(t, sb, "cat "+canary); out != "inside\n" {
		t.Errorf("the sandbox's own file was written through a link: %q", out)
	}
	untouched()
}

// TestCopyRace has the workload swap a directory for a link to a host
// directory in a tight loop while the host copies in and out of it: the
// host's directory is never read or written.
func TestCopyRace(t *testing.T) {
	canary, untouched := hostCanary(t)
	dir := filepath.Dir(canary)
	sb := sleeper(t, func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", fmt.Sprintf(`while :; do rm -rf /d; mkdir /d; echo sandbox > /d/shadow; rm -rf /d; ln -s %s /d; done`, dir)}
	})
	ctx := context.Background()
	host := t.TempDir()
	src := writeHost(t, filepath.Join(host, "shadow"), "host write\n")
	copied, copiedIn, links := 0, 0, 0
	// Until both directions have met /d as a directory a few times (and
	// so, in between, as a link).
	i := 0
	for ; i < 20000 && (copied < 20 || copiedIn < 20 || links < 20); i++ {
		out := filepath.Join(host, fmt.Sprint("out", i))
		if err := sb.CopyFrom(ctx, "/d/shadow", out, nil); err == nil {
			copied++
			// A copy that succeeded made the file: one that found
			// /d gone midway must say so, not succeed with nothing.
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), "secret") {
				t.Fatalf("copied out %q", b)
			}
		}
		if err := sb.CopyFrom(ctx, "/d", out+"-dir", nil); err == nil {
			// /d may have been a link when copied: a link it stays,
			// which the test must not follow either. And it was
			// copied: a /d that changed while the copy opened it is
			// an error, never a success that copied nothing.
			st, err := os.Lstat(out + "-dir")
			if err != nil {
				t.Fatal(err)
			}
			if !st.IsDir() {
				links++
			}
			if b, err := os.ReadFile(filepath.Join(out+"-dir", "shadow")); st.IsDir() && err == nil && strings.Contains(string(b), "secret") {
				t.Fatalf("copied out %q", b)
			}
		}
		if sb.CopyTo(ctx, src, "/d/shadow", nil) == nil {
			copiedIn++
		}
		sb.CopyTo(ctx, src, "/d/", nil)
		var buf bytes.Buffer
		sb.CopyFromTar(ctx, "/d", &buf, nil)
		if strings.Contains(buf.String(), "host secret") {
			t.Fatal("a tar of /d holds the host's file")
		}
	}
	t.Logf("of %d rounds, %d copies out and %d copies in found /d a directory, %d copies out a link", i, copied, copiedIn, links)
	untouched()
}

// TestCopyFIFO copies a FIFO where a file is expected: the copy neither
// opens nor hangs on it, and leaves it out.
func TestCopyFIFO(t *testing.T) {
	sb := sleeper(t, nil)
	inside(t, sb, "mkfifo /pipe && ln -s /pipe /pipelink && mkdir /dir && mkfifo /dir/pipe && echo x > /dir/file")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := t.TempDir()
	done := make(chan error, 1)
	go func() {
		var buf bytes.Buffer
		for _, err := range []error{
			sb.CopyFrom(ctx, "/pipe", filepath.Join(host, "pipe"), nil),
			sb.CopyFrom(ctx, "/pipelink", filepath.Join(host, "pipelink"), &CopyOptions{FollowLink: true}),
			sb.CopyFrom(ctx, "/dir", filepath.Join(host, "dir"), nil),
			sb.CopyFromTar(ctx, "/dir", &buf, nil),
		} {
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("a copy hung on a FIFO")
	}
	for _, p := range []string{"pipe", "pipelink", "dir/pipe"} {
		if _, err := os.Lstat(filepath.Join(host, p)); err == nil {
			t.Errorf("%s was made on the host", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(host, "dir/file")); err != nil || string(b) != "x\n" {
		t.Errorf("dir/file: %q %v", b, err)
	}
}

// TestCopyMounts copies to and from a running sandbox's volume and tmpfs,
// which only its own mount namespace shows, and into a read-only bind
// mount, which refuses.
func TestCopyMounts(t *testing.T) {
	vol, ro := t.TempDir(), t.TempDir()
	sb := sleeper(t, func(o *Options) {
		o.Mounts = []Mount{
			{Source: vol, Destination: "/vol"},
			{Type: "tmpfs", Destination: "/scratch"},
			{Source: ro, Destination: "/ro", ReadOnly: true},
		}
	})
	ctx := context.Background()
	host := t.TempDir()
	src := writeHost(t, filepath.Join(host, "f"), "from the host\n")
	if err := sb.CopyTo(ctx, src, "/vol/", nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "f")); err != nil || string(b) != "from the host\n" {
		t.Errorf("volume: %q %v", b, err)
	}
	if err := sb.CopyTo(ctx, src, "/scratch/", nil); err != nil {
		t.Fatal(err)
	}
	if out := inside(t, sb, "cat /scratch/f; echo made inside > /scratch/g"); out != "from the host\n" {
		t.Errorf("tmpfs: %q", out)
	}
	if err := sb.CopyFrom(ctx, "/scratch/g", filepath.Join(host, "g"), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "g")); string(b) != "made inside\n" {
		t.Errorf("from the tmpfs: %q", b)
	}
	if err := sb.CopyTo(ctx, src, "/ro/", nil); !errors.Is(err, unix.EROFS) {
		t.Errorf("copy into a read-only mount: %v", err)
	}
	if entries, _ := os.ReadDir(ro); len(entries) != 0 {
		t.Errorf("the read-only mount's source has %d entries", len(entries))
	}
}

// TestCopyStrict copies into a sandbox in a user namespace with a
// read-only root: into its tmpfs /tmp the files belong to its root (or,
// with Archive, keep their ids, as the sandbox numbers them); its root
// refuses.
func TestCopyStrict(t *testing.T) {
	sb := sleeper(t, func(o *Options) { o.Security = security.Strict() })
	ctx := context.Background()
	host := t.TempDir()
	src := writeHost(t, filepath.Join(host, "f"), "x\n")
	os.Chown(src, 1000, 1001)
	unix.Chmod(src, 0o4755)
	if err := sb.CopyTo(ctx, src, "/tmp/", nil); err != nil {
		t.Fatal(err)
	}
	if err := sb.CopyTo(ctx, src, "/tmp/a", &CopyOptions{Archive: true}); err != nil {
		t.Fatal(err)
	}
	if out := inside(t, sb, "stat -c '%u %g %a' /tmp/f /tmp/a"); out != "0 0 755\n1000 1001 4755\n" {
		t.Errorf("owners and modes inside: %q", out)
	}
	if err := sb.CopyTo(ctx, src, "/", nil); !errors.Is(err, unix.EROFS) {
		t.Errorf("copy into a read-only root: %v", err)
	}
	// Out again: the caller's, never setuid.
	if err := sb.CopyFrom(ctx, "/tmp/a", filepath.Join(host, "a"), nil); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(host, "a"), &st); err != nil || st.Uid != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("copied out: uid %d mode %o (%v)", st.Uid, st.Mode&0o7777, err)
	}
}

// TestCopyQuota copies a file larger than the sandbox's disk quota in:
// the copy fails with ENOSPC or EDQUOT and leaves nothing behind.
func TestCopyQuota(t *testing.T) {
	sb := sleeper(t, func(o *Options) { o.DiskQuota = testDiskQuota })
	big := make([]byte, 2*testDiskQuota)
	rand.Read(big)
	src := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(src, big, 0o644); err != nil {
		t.Fatal(err)
	}
	err := sb.CopyTo(context.Background(), src, "/big", nil)
	if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
		t.Errorf("copy past the quota: %v", err)
	}
	t.Log(err)
	if out := inside(t, sb, "ls -a / | grep -c berth-copy; [ ! -e /big ]"); out != "0\n" {
		t.Errorf("left behind: %q", out)
	}
}

// TestCopyTar unpacks hostile tar streams into a sandbox's directory:
// nothing lands outside it; and a directory copied out as a tar unpacks
// back the same.
func TestCopyTar(t *testing.T) {
	sb := sleeper(t, nil)
	inside(t, sb, "mkdir /dst")
	ctx := context.Background()
	type member struct {
		name, link string
		typ        byte
	}
	stream := func(ms ...member) *bytes.Buffer {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, m := range ms {
			h := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Mode: 0o644}
			if m.typ == tar.TypeReg {
				h.Size = 5
			}
			tw.WriteHeader(h)
			if h.Size > 0 {
				tw.Write([]byte("evil\n"))
			}
		}
		tw.Close()
		return &buf
	}
	for what, ms := range map[string][]member{
		"dot-dot":                    {{name: "../evil", typ: tar.TypeReg}},
		"link then below":            {{name: "l", link: "/", typ: tar.TypeSymlink}, {name: "l/etc/evil", typ: tar.TypeReg}},
		"climbing link then below":   {{name: "m", link: "../../..", typ: tar.TypeSymlink}, {name: "m/evil", typ: tar.TypeReg}},
		"hard link out":              {{name: "h", link: "../etc/passwd", typ: tar.TypeLink}},
		"hard link through its link": {{name: "k", link: "/etc", typ: tar.TypeSymlink}, {name: "h", link: "k/passwd", typ: tar.TypeLink}},
		"device":                     {{name: "mem", typ: tar.TypeChar}},
	} {
		if err := sb.CopyToTar(ctx, stream(ms...), "/dst", nil); !errors.Is(err, ErrUnsafeEntry) {
			t.Errorf("%s: %v, want ErrUnsafeEntry", what, err)
		}
	}
	if out := inside(t, sb, "ls /evil /etc/evil /dst/h /dst/mem 2>/dev/null; stat -c %h /etc/passwd"); out != "1\n" {
		t.Errorf("after hostile streams: %q", out)
	}
	if err := sb.CopyToTar(ctx, stream(member{name: "/abs/evil", typ: tar.TypeReg}), "/dst", nil); err != nil {
		t.Fatal(err)
	}
	if out := inside(t, sb, "cat /dst/abs/evil"); out != "evil\n" {
		t.Errorf("absolute name: %q", out)
	}

	var buf bytes.Buffer
	if err := sb.CopyFromTar(ctx, "/etc", &buf, nil); err != nil {
		t.Fatal(err)
	}
	inside(t, sb, "mkdir /rt")
	if err := sb.CopyToTar(ctx, &buf, "/rt", &CopyOptions{Archive: true}); err != nil {
		t.Fatal(err)
	}
	inside(t, sb, "diff -r /etc /rt/etc && cd /etc && find . | sort > /tmp/a && cd /rt/etc && find . | sort > /tmp/b && diff /tmp/a /tmp/b")
}

// TestCopyNotRunning copies with sandboxes not started and ended.
func TestCopyNotRunning(t *testing.T) {
	ctx := context.Background()
	sb := New("alpine:test", opts(sh("true")))
	if err := sb.CopyFrom(ctx, "/etc/passwd", t.TempDir(), nil); !errors.Is(err, ErrNotStarted) {
		t.Errorf("before Start: %v", err)
	}
	if _, err := sb.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.CopyFrom(ctx, "/etc/passwd", t.TempDir(), nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after its end: %v", err)
	}
	if err := sb.CopyToTar(ctx, &bytes.Buffer{}, "/", nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after its end: %v", err)
	}
}

// TestCopyKeptRootfs copies in and out of a sandbox whose workload has
// ended, kept with KeepRootfs: its rootfs is opened at its host path,
// where a planted link is still only a link; after Close it is gone.
func TestCopyKeptRootfs(t *testing.T) {
	canary, untouched := hostCanary(t)
	ctx := context.Background()
	sb := New("alpine:test", opts(func(o *Options) {
		o.Args = []string{"/bin/sh", "-c", "echo made > /made; ln -s " + canary + " /out; mkdir -p " + filepath.Dir(canary) + "; ln -s " + filepath.Dir(canary) + " /dir-link"}
		o.KeepRootfs = true
	}))
	if res, err := sb.Run(ctx); err != nil || !res.Success() {
		t.Fatal(res, err)
	}
	defer sb.Close()
	host := t.TempDir()
	if err := sb.CopyFrom(ctx, "/made", filepath.Join(host, "made"), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "made")); string(b) != "made\n" {
		t.Errorf("copied out of a kept rootfs: %q", b)
	}
	if err := sb.CopyFrom(ctx, "/out", filepath.Join(host, "out"), &CopyOptions{FollowLink: true}); err == nil {
		t.Error("a link to a host path, followed inside the kept rootfs, found something")
	}
	if err := sb.CopyTo(ctx, writeHost(t, filepath.Join(host, "new"), "new\n"), "/out", nil); err != nil {
		t.Fatal(err)
	}
	if err := sb.CopyTo(ctx, filepath.Join(host, "new"), "/dir-link/", nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sb.CopyFromTar(ctx, "/", &buf, nil); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	seen := map[string]bool{}
	for h, err := tr.Next(); err == nil; h, err = tr.Next() {
		seen[h.Name] = true
	}
	if !seen["out"] || !seen[filepath.Dir(canary)[1:]+"/new"] || !seen["made"] {
		t.Errorf("the kept rootfs as a tar lacks out, made or the file copied through /dir-link (%d entries)", len(seen))
	}
	untouched()
	sb.Close()
	if err := sb.CopyFrom(ctx, "/made", filepath.Join(host, "again"), nil); !errors.Is(err, ErrNotRunning) {
		t.Errorf("after Close: %v", err)
	}
}

// TestCopyCancel ends a copy's context halfway through a file: the copy
// stops, and the sandbox has neither the file nor a part of it.
func TestCopyCancel(t *testing.T) {
	sb := sleeper(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- sb.CopyToTar(ctx, pr, "/tmp", nil) }()
	tw := tar.NewWriter(pw)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 20})
	half := bytes.Repeat([]byte("x"), 512<<10)
	tw.Write(half)
	cancel()
	// The copy sees the end of its context at its next chunk.
	go func() { tw.Write(half); tw.Close(); pw.Close() }()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v", err)
	}
	pr.CloseWithError(errors.New("done"))
	if out := inside(t, sb, "ls -a /tmp | grep -c 'big\\|berth-copy'; true"); out != "0\n" {
		t.Errorf("left in /tmp: %q", out)
	}
}

// TestResolveInRootRace swaps a directory of a root for a link to a host
// directory while resolveInRoot (CopyFrom's FollowLink) resolves a path
// through it: it checked the directory, then looked its child up by a
// name the kernel resolved from root, which followed the swapped-in link
// to the host's files and read a host link there.
func TestResolveInRootRace(t *testing.T) {
	root, host := t.TempDir(), t.TempDir()
	if err := os.Symlink("/host-link-target", filepath.Join(host, "b")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(root, "swap")); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			unix.Renameat2(fd, "a", fd, "swap", unix.RENAME_EXCHANGE)
		}
	}()
	defer func() { close(stop); <-done }()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		p, err := resolveInRoot(fd, "/a/b")
		if err == nil && strings.Contains(p, "host-link-target") {
			t.Fatalf("resolved through the host's link: %s", p)
		}
	}
}

// TestCopyHoldsRootfs ends the workload while a copy into its sandbox is
// in progress: the teardown waits for the copy instead of removing the
// rootfs it writes into (which made the removal fail, or left the copy
// writing into a directory no longer there), then releases it.
func TestCopyHoldsRootfs(t *testing.T) {
	sb := sleeper(t, nil)
	sb.mu.Lock()
	rootfs := sb.rootfs
	sb.mu.Unlock()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := sb.CopyToTar(context.Background(), pr, "/tmp", nil)
		pr.CloseWithError(io.ErrClosedPipe) // a copy that ended early does not block the writes
		errc <- err
	}()
	tw := tar.NewWriter(pw)
	data := bytes.Repeat([]byte("x"), 1<<20)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data[:4096]); err != nil {
		t.Fatal(err)
	}
	// The copy is reading the stream now, with the sandbox's root open.
	if err := sb.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	select {
	case <-sb.done:
		t.Error("the sandbox was torn down under a copy in progress")
	default:
	}
	if _, err := os.Stat(rootfs); err != nil {
		t.Errorf("the rootfs went under a copy in progress: %v", err)
	}
	tw.Write(data[4096:])
	tw.Close()
	pw.Close()
	if err := <-errc; err != nil {
		t.Errorf("the copy: %v", err)
	}
	if _, err := sb.Wait(); err != nil {
		t.Errorf("wait: %v", err)
	}
	if _, err := os.Stat(rootfs); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the rootfs after the copy and the teardown: %v", err)
	}
}
