package layerfs

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// helperExport is the child of TestExportFileKilledLeavesNothing: it
// exports an image and is killed while it does.
func helperExport() int {
	s, err := Open(os.Getenv("BERTH_TEST_ROOT"), nil)
	if err == nil {
		err = s.ExportFile(context.Background(), os.Getenv("BERTH_TEST_REF"), os.Getenv("BERTH_TEST_EXPORT"), FormatDockerArchive)
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	return 0
}

// dirListing returns the names in dir with their sizes.
func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, e.Name()+" "+fi.Mode().String()+" "+strconv.FormatInt(fi.Size(), 10))
	}
	return names
}

// bigImage imports an image whose layer is size bytes that do not
// compress, so that exporting it takes a while.
func bigImage(t *testing.T, s *Store, size int) string {
	t.Helper()
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(data)
	layout := t.TempDir()
	writeLayout(t, layout, "big:1", false, buildTar(t, fileEntry("big", string(data), 0o644)))
	if _, err := s.Import(context.Background(), layout, &ImportOptions{Name: "big:1"}); err != nil {
		t.Fatal(err)
	}
	return "big:1"
}

// An export killed with SIGKILL part way leaves the target as it was and
// nothing beside it: the file being written has no name until it is
// whole.
func TestExportFileKilledLeavesNothing(t *testing.T) {
	s := newStore(t, nil)
	ref := bigImage(t, s, 96<<20)
	for _, tc := range []struct {
		name, existing string
	}{
		{"new target", ""},
		{"replacing a target", "the previous archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "image.tar")
			if tc.existing != "" {
				if err := os.WriteFile(target, []byte(tc.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			before := dirListing(t, dir)
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "BERTH_TEST_EXPORT="+target, "BERTH_TEST_ROOT="+s.Root(), "BERTH_TEST_REF="+ref)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Kill it once it has written a few MiB of the archive, to
			// a file open in dir (named or not).
			fdDir := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "fd")
			killed := false
			for !killed {
				fds, err := os.ReadDir(fdDir)
				if err != nil {
					break // it exited
				}
				for _, fd := range fds {
					link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
					if err != nil || !strings.HasPrefix(link, dir+"/") {
						continue
					}
					if fi, err := os.Stat(filepath.Join(fdDir, fd.Name())); err == nil && fi.Size() > 4<<20 {
						cmd.Process.Signal(syscall.SIGKILL)
						killed = true
						break
					}
				}
			}
			err := cmd.Wait()
			if !killed {
				t.Fatalf("the export ended (%v, %s) before it could be killed", err, stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("export was not killed: %v %s", err, stderr.String())
			}
			if after := dirListing(t, dir); !slices.Equal(before, after) {
				t.Errorf("killed export left %v, had %v", after, before)
			}
			if tc.existing != "" {
				if b, _ := os.ReadFile(target); string(b) != tc.existing {
					t.Errorf("target changed to %d bytes", len(b))
				}
			}
		})
	}
}

// umaskForTest returns the process's umask, setting it back at once.
func umaskForTest() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}

// ExportFile puts a whole archive in place, replacing what was there, or
// leaves the target alone and nothing beside it; its errors name the
// target, never a temporary file.
func TestExportFile(t *testing.T) {
	s := newStore(t, nil)
	img, err := s.Import(context.Background(), sharedImage(t, busyboxOCI), nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := img.Names[0]

	t.Run("new and replaced", func(t *testing.T) {
		dir := t.TempDir()
		// As long as a name can be: the temporary one beside it must
		// fit too.
		target := filepath.Join(dir, strings.Repeat("i", 251)+".tar")
		for i := 0; i < 2; i++ {
			if err := s.ExportFile(context.Background(), ref, target, FormatOCILayout); err != nil {
				t.Fatal(err)
			}
			if got := dirListing(t, dir); len(got) != 1 {
				t.Errorf("export left %v", got)
			}
			fi, err := os.Stat(target)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o644&^umaskForTest() {
				t.Errorf("mode %v", fi.Mode())
			}
			got, err := newStore(t, nil).Import(context.Background(), target, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != img.Digest {
				t.Errorf("exported %s, imported back %s", img.Digest, got.Digest)
			}
		}
	})
	for _, tc := range []struct {
		name   string
		ref    string
		setup  func(target string) error
		target string
	}{
		{name: "unknown image", ref: "no/such:image"},
		{name: "cancelled", ref: ref},
		{name: "target a directory", ref: ref, setup: func(target string) error { return os.Mkdir(target, 0o755) }},
		{name: "existing target, unknown image", ref: "no/such:image", setup: func(target string) error { return os.WriteFile(target, []byte("old"), 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "image.tar")
			if tc.setup != nil {
				if err := tc.setup(target); err != nil {
					t.Fatal(err)
				}
			}
			before := dirListing(t, dir)
			c := context.Background()
			if tc.name == "cancelled" {
				var cancel context.CancelFunc
				c, cancel = context.WithCancel(c)
				cancel()
			}
			err := s.ExportFile(c, tc.ref, target, FormatDockerArchive)
			if err == nil {
				t.Fatal("ExportFile succeeded")
			}
			if !strings.Contains(err.Error(), target) || strings.Contains(err.Error(), ".tmp") {
				t.Errorf("error %q does not name the target, or names a temporary file", err)
			}
			if after := dirListing(t, dir); !slices.Equal(before, after) {
				t.Errorf("failed export left %v, had %v", after, before)
			}
		})
	}
}

// ExportLayout adds to a layout directory that may be anyone's: it reads
// the index there as an archive's, and writes nothing through a symlink.
func TestExportLayoutIntoHostileDirectory(t *testing.T) {
	s := newStore(t, nil)
	img, err := s.Import(context.Background(), sharedImage(t, busyboxOCI), nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := img.Names[0]
	config := "blobs/sha256/" + img.ConfigDigest.Hex
	for _, tc := range []struct {
		name string
		// setup makes the layout in dir, with outside a directory
		// beside it holding the planted file secret.
		setup func(t *testing.T, dir, outside string, secret planted)
		want  error // nil: the export succeeds
	}{
		{"blobs a symlink out", func(t *testing.T, dir, outside string, _ planted) {
			os.Symlink(outside, filepath.Join(dir, "blobs"))
		}, ErrUnsafeEntry},
		{"blobs/sha256 a symlink out", func(t *testing.T, dir, outside string, _ planted) {
			os.Mkdir(filepath.Join(dir, "blobs"), 0o755)
			os.Symlink(outside, filepath.Join(dir, "blobs", "sha256"))
		}, ErrUnsafeEntry},
		{"index.json a symlink out", func(t *testing.T, dir, _ string, secret planted) {
			os.Symlink(secret.path, filepath.Join(dir, "index.json"))
		}, ErrUnsafeEntry},
		{"index.json a FIFO", func(t *testing.T, dir, _ string, _ planted) {
			unix.Mkfifo(filepath.Join(dir, "index.json"), 0o644)
		}, ErrUnsafeEntry},
		{"index.json /dev/zero", func(t *testing.T, dir, _ string, _ planted) {
			unix.Mknod(filepath.Join(dir, "index.json"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5)))
		}, ErrUnsafeEntry},
		{"index.json huge", func(t *testing.T, dir, _ string, _ planted) {
			os.WriteFile(filepath.Join(dir, "index.json"), nil, 0o644)
			os.Truncate(filepath.Join(dir, "index.json"), 1<<30)
		}, ErrMemberTooLarge},
		{"a blob a symlink out", func(t *testing.T, dir, outside string, secret planted) {
			os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
			os.Symlink(secret.path, filepath.Join(dir, filepath.FromSlash(config)))
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			dir, outside := filepath.Join(top, "layout"), filepath.Join(top, "outside")
			for _, d := range []string{dir, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			secret := plantFile(t, outside)
			tc.setup(t, dir, outside, secret)
			err := s.ExportLayout(context.Background(), ref, dir)
			if tc.want == nil && err != nil {
				t.Fatalf("ExportLayout: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("ExportLayout: %v, want %v", err, tc.want)
			}
			secret.check(t, err)
			entries, _ := os.ReadDir(outside)
			if b, _ := os.ReadFile(secret.path); len(entries) != 1 || string(b) != secret.secret {
				t.Errorf("export wrote outside the layout: %v", entries)
			}
			if tc.want == nil {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, filepath.FromSlash(config)), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
					t.Errorf("the config blob is not a regular file (%v)", err)
				}
				got, err := newStore(t, nil).Import(context.Background(), dir, nil)
				if err != nil || got.Digest != img.Digest {
					t.Errorf("import of the layout: %v", err)
				}
			}
		})
	}
}
