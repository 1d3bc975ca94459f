package plugin

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoSandboxInPlugins: package sandbox has a cgo constructor (the
// sandbox's init) that runs first in every program that links it. A
// plugin must not link it, through this package or any other, nor may
// the example plugins.
func TestNoSandboxInPlugins(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./...", "../examples/plugins/...", "./testdata/infoplugin").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/berth-dev/berth/sandbox" || strings.HasPrefix(pkg, "github.com/berth-dev/berth/sandbox/") {
			t.Errorf("plugins link %s", pkg)
		}
	}
}
