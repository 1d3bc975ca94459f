package mountinfo

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b\011c\134d`: "/tmp/a b\tc\\d",
		`/plain`:                "/plain",
		`/x\04`:                 `/x\04`, // too short to be an escape
		`/x\09`:                 `/x\09`, // not octal
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	sub := dir + "/with space"
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(sub, unix.MNT_DETACH)
	got, err := Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.Index(got, sub); i < 0 || got[0] != dir {
		t.Errorf("Under(%s) = %q, want %s first, then %q", dir, got, dir, sub)
	}
	if got, _ := Under(dir + "-not"); len(got) != 0 {
		t.Errorf("a sibling with the same prefix matched: %q", got)
	}
	if got, _ := Under(""); len(got) != 0 {
		t.Errorf("an empty dir matched: %q", got)
	}
}
