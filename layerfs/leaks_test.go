package layerfs

import (
	"errors"
	"io/fs"
	"os"
	"testing"
)

// entriesLeft returns the entries of dir, for a check that nothing is
// left there: an error other than the directory's absence fails the
// test, rather than reading as "nothing left".
func entriesLeft(t testing.TB, dir string) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	return entries
}
