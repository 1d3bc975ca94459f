package nsinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The defence against CVE-2019-5736: the file behind the path the host
// executes cannot be opened for writing, even when no process runs it
// (so that no "text file busy" protects it), while it can be run.
func TestReadOnlyViewRefusesWrites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("must run as root: it makes a detached mount")
	}
	file := filepath.Join(t.TempDir(), "runtime")
	if err := os.WriteFile(file, []byte("#!/bin/sh\necho original\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := ReadOnlyView(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	view := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	w, err := os.OpenFile(view, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		w.Close()
		t.Fatal("opened the executable for writing through its read-only view")
	}
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for write: %v, want EROFS", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "#!/bin/sh\necho original\n" {
		t.Errorf("file changed: %q", b)
	}
	if b, err := os.ReadFile(view); err != nil || len(b) == 0 {
		t.Errorf("read through view: %v", err)
	}
}

func TestStatusReader(t *testing.T) {
	r, w, _ := os.Pipe()
	w.WriteString("R\nX 3\nS 9\nE 2 mount /proc\nC 13 exec /bin/x\ngarbage\n")
	w.Close()
	sr := NewStatusReader(r)
	var got []any
	for {
		st, err := sr.Next()
		if err != nil {
			var se *SetupError
			if errors.As(err, &se) {
				got = append(got, *se)
				continue
			}
			got = append(got, err.Error())
			if err.Error() != `nsinit: garbled status "garbage"` {
				break
			}
			continue
		}
		got = append(got, st)
	}
	want := []any{
		Status{Started: true},
		Status{Exited: true, ExitCode: 3},
		Status{Exited: true, ExitCode: 137, Signal: syscall.SIGKILL},
		SetupError{Msg: "mount /proc", Errno: syscall.ENOENT},
		SetupError{Msg: "exec /bin/x", Errno: syscall.EACCES, Exec: true},
		`nsinit: garbled status "garbage"`,
		"EOF",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("status lines (-want +got):\n%s", d)
	}
}
