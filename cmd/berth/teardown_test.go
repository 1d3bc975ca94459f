package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// errDetach is the failure of brokenDetach's Detach.
var errDetach = errors.New("detach failed on purpose")

// brokenDetach is a Network that attaches nothing and fails to detach:
// a teardown failure after the workload ran.
type brokenDetach struct{}

func (brokenDetach) Attach(context.Context, string, string, *netplug.AttachOptions) (*netplug.Attachment, error) {
	return &netplug.Attachment{}, nil
}

func (brokenDetach) Detach(context.Context, string, string) error { return errDetach }

// TestTeardownErrorKeepsStatus checks that a sandbox whose teardown fails
// after its workload ran exits with the workload's status, and says what
// failed as a warning.
func TestTeardownErrorKeepsStatus(t *testing.T) {
	e := newCLIEnv(t)
	g := &globals{root: e.root, state: e.state, cgroupParent: fmt.Sprintf("berth-clitest-%d", os.Getpid())}
	opts, err := g.sandboxOptions()
	if err != nil {
		t.Fatal(err)
	}
	opts.Args, opts.Network = []string{"sh", "-c", "exit 3"}, brokenDetach{}
	var stderr bytes.Buffer
	err = runSandbox(context.Background(), sandbox.New("alpine:test", opts), false, &stderr, nil, nil)
	if ee, ok := errors.AsType[exitError](err); !ok || ee != 3 {
		t.Errorf("run: %v, want the workload's exit status 3", err)
	}
	if s := stderr.String(); !strings.Contains(s, "berth: warning: ") || !strings.Contains(s, errDetach.Error()) {
		t.Errorf("stderr %q, want a warning naming %q", s, errDetach)
	}
}
