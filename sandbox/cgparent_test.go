package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/berth-dev/berth/cgroup"
)

// A handle opened with a Manager of another parent (berth exec without
// the --cgroup-parent the sandbox was run with) still finds the
// sandbox's cgroup, where its record says it is.
func TestOpenUnderOwnCgroupParent(t *testing.T) {
	outer := fmt.Sprintf("berth-test-%d-cgparent", os.Getpid())
	own, err := cgroup.NewManager(cgroup.Options{Parent: outer + "/own/x"})
	if err != nil {
		t.Fatal(err)
	}
	sb := New("alpine:test", opts(func(o *Options) { o.Cgroups = own; o.Args = []string{"sleep", "30"} }))
	if err := sb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if dirs := cgroupDirs(t, outer+"/own/x", sb.ID()); len(dirs) == 0 {
		t.Fatalf("the sandbox's cgroup is not under %s/own/x", outer)
	}
	h, err := Open(context.Background(), sb.ID(), &Options{Storage: testEnv.store, Cgroups: testEnv.cgroups, StateDir: testEnv.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if st, err := h.Stats(); err != nil || st.Pids == 0 {
		t.Errorf("stats through the handle: %+v %v", st, err)
	}
	var out bytes.Buffer
	if res, err := h.Exec(context.Background(), &ExecOptions{Args: []string{"true"}, Stdout: &out}); err != nil || !res.Success() {
		t.Errorf("exec through the handle: %+v %v", res, err)
	}
	sb.Close()
	if err := own.RemoveParent(); err != nil {
		t.Errorf("RemoveParent: %v", err)
	}
	if dirs := cgroupDirs(t, outer, ""); len(dirs) > 0 {
		t.Errorf("left: %v", dirs)
	}
}
