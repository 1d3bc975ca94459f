package plugin

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// trustedDir makes a directory that only root can write, on a path only
// root can write (t.TempDir is under /tmp, which anyone can write to).
func trustedDir(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: plugins must be root's")
	}
	dir, err := os.MkdirTemp("/run", "berth-plugintest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeProgram(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\nexit 0\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestFindTrusted(t *testing.T) {
	dir := trustedDir(t)
	t.Setenv("BERTH_PLUGIN_DIR", dir)
	prog := filepath.Join(dir, "p")
	writeProgram(t, prog, 0o755)
	sub := filepath.Join(dir, "versions")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	writeProgram(t, filepath.Join(sub, "p-1"), 0o700)
	if err := os.Symlink("versions/p-1", filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"p":                       prog,
		prog:                      prog,
		dir + "//versions/../p":   prog,
		"linked":                  filepath.Join(dir, "linked"),
		filepath.Join(sub, "p-1"): filepath.Join(sub, "p-1"),
		prog + "/x":               "", // a file is no directory
	} {
		got, err := Find(name)
		if want == "" {
			if err == nil {
				t.Errorf("Find(%q) = %q, want an error", name, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("Find(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if Dir() != dir {
		t.Errorf("Dir() = %q with BERTH_PLUGIN_DIR=%q", Dir(), dir)
	}
	t.Setenv("BERTH_PLUGIN_DIR", "")
	if Dir() != DefaultDir {
		t.Errorf("Dir() = %q without BERTH_PLUGIN_DIR", Dir())
	}
}

// TestFindUntrusted gives Find programs that someone other than root
// could replace, or that are no programs: each must be refused with an
// error that names what is at fault.
func TestFindUntrusted(t *testing.T) {
	dir := trustedDir(t)
	t.Setenv("BERTH_PLUGIN_DIR", dir)
	const nobody = 65534
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		writeProgram(t, p, mode)
		return p
	}
	mkdir := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}

	groupWritable := mk("group-writable", 0o775)
	otherWritable := mk("other-writable", 0o757)
	notExecutable := mk("not-executable", 0o644)
	notRoots := mk("not-roots", 0o755)
	if err := os.Chown(notRoots, nobody, 0); err != nil {
		t.Fatal(err)
	}
	open := mkdir("open", 0o777)
	inOpen := filepath.Join(open, "p")
	writeProgram(t, inOpen, 0o755)
	sticky := mkdir("sticky", 0o1777)
	inSticky := filepath.Join(sticky, "p")
	writeProgram(t, inSticky, 0o755)
	nobodys := mkdir("nobodys", 0o755)
	if err := os.Chown(nobodys, nobody, 0); err != nil {
		t.Fatal(err)
	}
	inNobodys := filepath.Join(nobodys, "p")
	writeProgram(t, inNobodys, 0o755)
	// A link of root's in a trusted directory, to a program in one that
	// is not: whoever can write there can swap the program.
	if err := os.Symlink(inOpen, filepath.Join(dir, "link-to-open")); err != nil {
		t.Fatal(err)
	}
	// A link that is not root's.
	good := mk("good", 0o755)
	if err := os.Symlink(good, filepath.Join(dir, "link-of-nobody")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(dir, "link-of-nobody"), nobody, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("loop", filepath.Join(dir, "loop")); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o755); err != nil {
		t.Fatal(err)
	}
	mkdir("a-directory", 0o755)

	for _, c := range []struct {
		name  string
		is    error
		names string // the path at fault, in the error
	}{
		{"group-writable", ErrUntrusted, groupWritable},
		{"other-writable", ErrUntrusted, otherWritable},
		{"not-executable", ErrUntrusted, notExecutable},
		{"not-roots", ErrUntrusted, notRoots},
		{inOpen, ErrUntrusted, open},
		{inSticky, ErrUntrusted, sticky},
		{inNobodys, ErrUntrusted, nobodys},
		{"link-to-open", ErrUntrusted, open},
		{"link-of-nobody", ErrUntrusted, filepath.Join(dir, "link-of-nobody")},
		{"loop", syscall.ELOOP, filepath.Join(dir, "loop")},
		{"fifo", ErrUntrusted, fifo},
		{"a-directory", ErrUntrusted, filepath.Join(dir, "a-directory")},
		{"missing", fs.ErrNotExist, filepath.Join(dir, "missing")},
		{"", nil, `""`},
		{".", nil, `"."`},
		{"..", nil, `".."`},
	} {
		got, err := Find(c.name)
		switch {
		case err == nil:
			t.Errorf("Find(%q) = %q, want an error", c.name, got)
		case c.is != nil && !errors.Is(err, c.is):
			t.Errorf("Find(%q): %v, want one that wraps %v", c.name, err, c.is)
		case !strings.Contains(err.Error(), c.names):
			t.Errorf("Find(%q): %v does not name %s", c.name, err, c.names)
		}
	}
}

// buildPlugin builds the test plugin in testdata/name into dir.
func buildPlugin(t *testing.T, dir, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "./testdata/"+name)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	return out
}

// TestList lists a directory with a plugin, programs that are not, and
// things that are not programs: each program is listed, the plugin with
// what it says of itself, the others with their errors.
func TestList(t *testing.T) {
	dir := trustedDir(t)
	buildPlugin(t, dir, "infoplugin")
	writeProgram(t, filepath.Join(dir, "not-a-plugin"), 0o755)
	writeProgram(t, filepath.Join(dir, "writable"), 0o777)
	writeProgram(t, filepath.Join(dir, ".hidden"), 0o755)
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := List(context.Background(), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if strings.Join(names, " ") != "infoplugin not-a-plugin writable" {
		t.Fatalf("List: %q, want infoplugin, not-a-plugin and writable", names)
	}
	i := entries[0].Info
	if entries[0].Err != nil || i.Kind != KindNetwork || i.Protocol != ProtocolVersion || !i.Has(CapPorts) || i.Path != filepath.Join(dir, "infoplugin") {
		t.Errorf("infoplugin: %+v, %v", i, entries[0].Err)
	}
	if entries[1].Err == nil {
		t.Errorf("not-a-plugin: no error")
	}
	if !errors.Is(entries[2].Err, ErrUntrusted) {
		t.Errorf("writable: %v, want ErrUntrusted", entries[2].Err)
	}

	if e, err := List(context.Background(), filepath.Join(dir, "nothing-here"), nil); err != nil || len(e) != 0 {
		t.Errorf("List of a directory that does not exist: %v, %v; want nothing and no error", e, err)
	}
}
