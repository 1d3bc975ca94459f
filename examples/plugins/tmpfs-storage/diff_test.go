package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
)

// readTar lists a tar's entries as "name type [extra]" lines, and its
// files' contents by name.
func readTar(t testing.TB, b []byte) ([]string, map[string]string) {
	t.Helper()
	var list []string
	data := make(map[string]string)
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return list, data
		}
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%s %c %d:%d", hdr.Name, hdr.Typeflag, hdr.Uid, hdr.Gid)
		if hdr.Linkname != "" {
			line += " -> " + hdr.Linkname
		}
		list = append(list, line)
		if hdr.Typeflag == tar.TypeReg {
			c, _ := io.ReadAll(tr)
			data[hdr.Name] = string(c)
		}
	}
}

// Diff writes what changed as an OCI layer: new files, links and
// directories, deletions as .wh. files, a directory deleted and made again
// as opaque, and nothing the layers already had.
func TestDiff(t *testing.T) {
	s := newTestStorage(t, "4m")
	res := prepare(t, s, "d", plugin.PrepareRequest{Layers: makeLayers(t)})
	root := mountAnswer(t, res)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(root + "/etc/hello"))
	must(os.WriteFile(root+"/etc/new", []byte("new file\n"), 0o600))
	must(os.Link(root+"/etc/new", root+"/etc/new2"))
	must(os.Symlink("../etc/new", root+"/bin/link"))
	must(os.RemoveAll(root + "/bin"))
	must(os.Mkdir(root+"/bin", 0o755))
	must(os.WriteFile(root+"/bin/only", []byte("only\n"), 0o755))
	must(os.Chown(root+"/bin/only", 1000, 1001))

	var buf bytes.Buffer
	must(s.Diff(context.Background(), "d", &buf))
	list, data := readTar(t, buf.Bytes())
	want := []string{
		"bin/ 5 0:0",
		"bin/.wh..wh..opq 0 0:0",
		"bin/only 0 1000:1001",
		"etc/ 5 0:0",
		"etc/.wh.hello 0 0:0",
		"etc/new 0 0:0",
		"etc/new2 1 0:0 -> etc/new",
	}
	if strings.Join(list, "\n") != strings.Join(want, "\n") {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(list, "\n"), strings.Join(want, "\n"))
	}
	if data["etc/new"] != "new file\n" || data["bin/only"] != "only\n" {
		t.Errorf("contents: %q", data)
	}

	// The same tree makes the same tar.
	var again bytes.Buffer
	must(s.Diff(context.Background(), "d", &again))
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Error("two diffs of one tree differ")
	}
	if err := s.Diff(context.Background(), "nope", io.Discard); !errors.Is(err, plugin.ErrNotFound) {
		t.Errorf("diff of an unknown key: %v, want ErrNotFound", err)
	}
	must(unix.Unmount(root, 0))
	release(t, s, "d")
}

// Under a user namespace the upper directory holds host ids; the diff
// has the image's. A link the workload put in the upper directory is
// written as a link, not followed.
func TestDiffMapsOwnersAndKeepsLinks(t *testing.T) {
	s := newTestStorage(t, "4m")
	maps := []layerfs.IDMap{{ContainerID: 0, HostID: 300000, Size: 65536}}
	prepare(t, s, "m", plugin.PrepareRequest{UIDMap: maps, GIDMap: maps})
	upper := filepath.Join(s.cfg.root, "m", upperDir)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(upper+"/mine", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Lchown(upper+"/mine", 301000, 300005)
	if err := os.Symlink(secret, upper+"/escape"); err != nil {
		t.Fatal(err)
	}
	os.Lchown(upper+"/escape", 300000, 300000)
	var buf bytes.Buffer
	if err := s.Diff(context.Background(), "m", &buf); err != nil {
		t.Fatal(err)
	}
	list, data := readTar(t, buf.Bytes())
	want := "escape 2 0:0 -> " + secret + "\nmine 0 1000:5"
	if strings.Join(list, "\n") != want {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(list, "\n"), want)
	}
	for name, c := range data {
		if strings.Contains(c, "host secret") {
			t.Errorf("%s holds the host file the link points at", name)
		}
	}
	release(t, s, "m")
}

// A file of holes bigger than the rootfs (a workload can make a terabyte
// of them on a tmpfs of a few MiB) is refused, not written out in full.
func TestDiffRefusesHoles(t *testing.T) {
	s := newTestStorage(t, "4m")
	prepare(t, s, "h", plugin.PrepareRequest{})
	upper := filepath.Join(s.cfg.root, "h", upperDir)
	if err := os.WriteFile(upper+"/small", []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(upper+"/small", 4<<30); err != nil {
		t.Fatal(err)
	}
	var n countingWriter
	err := s.Diff(context.Background(), "h", &n)
	if err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Errorf("diff of a 4 GiB sparse file in a 4 MiB rootfs: %v after %d bytes, want a refusal", err, n)
	}
	if n > 1<<20 {
		t.Errorf("diff wrote %d bytes before it refused", n)
	}
	release(t, s, "h")
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

// Directories nested past PATH_MAX are refused, not walked: the depth of
// the walk and the length of names stay bounded.
func TestDiffRefusesDeepPaths(t *testing.T) {
	s := newTestStorage(t, "16m") // 4096 inodes
	prepare(t, s, "deep", plugin.PrepareRequest{})
	dir, err := os.Open(filepath.Join(s.cfg.root, "deep", upperDir))
	if err != nil {
		t.Fatal(err)
	}
	fd := int(dir.Fd())
	for i := 0; i < 2100; i++ { // "d/" 2100 times: 4200 bytes
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			unix.Close(fd)
		}
		fd = next
	}
	unix.Close(fd)
	dir.Close()
	err = s.Diff(context.Background(), "deep", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("diff of directories 2100 deep: %v, want a refusal", err)
	}
	release(t, s, "deep")
}

// A workload still running swaps, while Diff walks, a directory for a
// symlink to a host directory, a file for a FIFO and a file for a
// symlink to a host file, each in one atomic rename. Diff may fail, but
// it never hangs and never writes anything from outside the upper
// directory.
func TestDiffWhileTheTreeIsSwapped(t *testing.T) {
	s := newTestStorage(t, "4m")
	prepare(t, s, "sw", plugin.PrepareRequest{})
	defer release(t, s, "sw")
	upper := filepath.Join(s.cfg.root, "sw", upperDir)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(upper+"/d", 0o755))
	must(os.WriteFile(upper+"/d/secret", []byte("mine"), 0o644))
	must(os.Symlink(host, upper+"/dlink"))
	must(os.WriteFile(upper+"/f", []byte("mine"), 0o644))
	must(unix.Mkfifo(upper+"/fifo", 0o644))
	must(os.WriteFile(upper+"/g", []byte("mine"), 0o644))
	must(os.Symlink(filepath.Join(host, "secret"), upper+"/glink"))

	stop := make(chan struct{})
	swapped := make(chan int)
	go func() {
		n := 0
		defer func() { swapped <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, p := range [][2]string{{"d", "dlink"}, {"f", "fifo"}, {"g", "glink"}} {
				if err := unix.Renameat2(unix.AT_FDCWD, upper+"/"+p[0], unix.AT_FDCWD, upper+"/"+p[1], unix.RENAME_EXCHANGE); err != nil {
					t.Error(err)
					return
				}
			}
			n++
		}
	}()
	failed := 0
	for i := 0; i < 300; i++ {
		var buf bytes.Buffer
		done := make(chan error, 1)
		go func() { done <- s.Diff(context.Background(), "sw", &buf) }()
		select {
		case err := <-done:
			if err != nil {
				failed++
				continue
			}
		case <-time.After(30 * time.Second):
			close(stop)
			<-swapped
			t.Fatalf("Diff %d hangs", i)
		}
		_, data := readTar(t, buf.Bytes())
		for name, c := range data {
			if strings.Contains(c, "host secret") {
				t.Fatalf("Diff %d: %s holds the host's file", i, name)
			}
		}
	}
	close(stop)
	t.Logf("300 diffs during %d swaps; %d failed on a change", <-swapped, failed)
}
