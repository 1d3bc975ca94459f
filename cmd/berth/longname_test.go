package main

import (
	"strings"
	"testing"
)

// A name or path of thousands of bytes is refused with a message that
// echoes only its start and its length. Those the library packages check
// themselves (image references, volume names, sandbox IDs) come short out
// of the library already, for embedders; any other, a path in an
// *os.PathError say, is cut as berth prints it.
func TestLongNamesClipped(t *testing.T) {
	e := newCLIEnv(t)
	long := strings.Repeat("a", 5000)
	path := "/" + long
	for _, c := range []struct {
		args    []string
		library bool // the error is short before berth prints it
	}{
		{[]string{"image", "inspect", long}, true},
		{[]string{"image", "rm", long}, true},
		{[]string{"image", "tag", "alpine:test", long}, true},
		{[]string{"image", "import", "--name", long, path}, false},
		{[]string{"image", "export", long, "/tmp/x.tar"}, true},
		{[]string{"image", "export", "alpine:test", path}, false},
		{[]string{"run", long, "true"}, true},
		{[]string{"run", "-v", long + ":/x", "alpine:test", "true"}, true},
		{[]string{"run", "-v", path + ":/x", "alpine:test", "true"}, false},
		{[]string{"run", "-w", path, "alpine:test", "true"}, false},
		{[]string{"exec", long, "true"}, true},
		{[]string{"kill", long}, true},
		{[]string{"volume", "create", long}, true},
		{[]string{"volume", "rm", long}, true},
		{[]string{"network", "rm", long}, true},
		{[]string{"network", "create", long}, true},
		{[]string{"run", "--net", long, "alpine:test", "true"}, false},
		{[]string{long}, true},
		{[]string{"image", long}, true},
	} {
		args := e.args(c.args...)
		name := strings.ReplaceAll(strings.Join(c.args, " "), long, "<5000 a>")
		_, stderr, code := berthExit(t, e.root, args...)
		if code == 0 || len(stderr) > 400 || strings.Contains(stderr, long[:65]) || !strings.Contains(stderr, " bytes)") {
			t.Errorf("berth %s: exit %d, %d bytes of stderr: %.300q", name, code, len(stderr), stderr)
		}
		if !c.library {
			continue
		}
		_, err := berth(t, e.root, args...)
		if err == nil || len(err.Error()) > 300 || strings.Contains(err.Error(), long[:65]) {
			t.Errorf("berth %s: the error, before berth prints it, is %d bytes: %.300q", name, len(err.Error()), err)
		}
	}
}
