package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// promptly runs f and fails the test if it has not returned within a
// minute: what it checks must never block, and a hang would otherwise
// last until the test binary's own timeout.
func promptly(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("%s blocks", what)
		return nil
	}
}

// A sandbox's /etc/passwd is the sandbox's to replace: berth reads it on
// the host's side only if it is a regular file of bounded size, and
// otherwise says which file it refused, at once.
func TestUserLookupIsBounded(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(root, passwd string) error
	}{
		{"fifo", func(root, passwd string) error { return unix.Mkfifo(passwd, 0o644) }},
		{"device", func(root, passwd string) error { return unix.Mknod(passwd, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))) }},
		{"link to a device", func(root, passwd string) error {
			if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
				return err
			}
			if err := unix.Mknod(filepath.Join(root, "dev", "zero"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))); err != nil {
				return err
			}
			return os.Symlink("/dev/zero", passwd)
		}},
		{"socket", func(root, passwd string) error {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			t.Cleanup(func() { unix.Close(fd) })
			return unix.Bind(fd, &unix.SockaddrUnix{Name: passwd})
		}},
		{"huge", func(root, passwd string) error { return os.Truncate(passwd, maxSandboxFile+1) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			passwd := filepath.Join(root, "etc", "passwd")
			if err := os.Mkdir(filepath.Dir(passwd), 0o755); err != nil {
				t.Fatal(err)
			}
			if c.name == "huge" {
				if err := os.WriteFile(passwd, []byte("nobody:x:65534:65534::/:/bin/sh\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.make(root, passwd); err != nil {
				t.Fatal(err)
			}
			err := promptly(t, "looking the user up", func() error {
				_, err := resolveUser(root, "nobody")
				return err
			})
			if !errors.Is(err, ErrSandboxFile) || !strings.Contains(err.Error(), "/etc/passwd") {
				t.Errorf("got %v, want %v naming /etc/passwd", err, ErrSandboxFile)
			}
		})
	}
	// An ordinary file is read as before.
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("nobody:x:65534:65533::/home:/bin/sh\n"), 0o644)
	if u, err := resolveUser(root, "nobody"); err != nil || u.uid != 65534 || u.gid != 65533 || u.home != "/home" {
		t.Errorf("an ordinary /etc/passwd: %+v, %v", u, err)
	}
}

// `berth exec -u nobody` into a sandbox that replaced its /etc/passwd
// with a FIFO, a huge file or a link to a device fails at once with an
// error naming the file, instead of hanging the host's command.
func TestExecUserHostilePasswd(t *testing.T) {
	sb := New("alpine:test", opts(func(o *Options) { o.Args = []string{"sleep", "1000"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	// A device node in the sandbox's tree, as root with CAP_MKNOD could
	// make one; made from the host so that this test does not depend on
	// the capability.
	if err := unix.Mknod(filepath.Join(sb.rootfs, "zero"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))); err != nil {
		t.Fatal(err)
	}
	passwd := filepath.Join(sb.rootfs, "etc", "passwd")
	orig, err := os.ReadFile(passwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, script string }{
		{"fifo", "rm /etc/passwd && mkfifo /etc/passwd"},
		{"huge", "truncate -s 64M /etc/passwd"},
		{"link to a device", "ln -sf /zero /etc/passwd"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The image's file, back for the root the next line runs as.
			os.Remove(passwd)
			if err := os.WriteFile(passwd, orig, 0o644); err != nil {
				t.Fatal(err)
			}
			if res, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"/bin/sh", "-c", c.script}}); err != nil || !res.Success() {
				t.Fatalf("replace /etc/passwd: %v %v", res, err)
			}
			err := promptly(t, "exec -u nobody", func() error {
				_, err := sb.Exec(context.Background(), &ExecOptions{Args: []string{"true"}, User: "nobody"})
				return err
			})
			if !errors.Is(err, ErrSandboxFile) || !strings.Contains(err.Error(), "/etc/passwd") {
				t.Errorf("got %v, want %v naming /etc/passwd", err, ErrSandboxFile)
			}
		})
	}
}
