package netplug

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// boundExec runs CNI plugins as libcni's RawExec does (the configuration
// on stdin, the result or a CNI error on stdout), with two differences
// that keep a plugin from outliving the program that ran it:
//
//   - The plugin is killed (SIGKILL) when that program dies. Otherwise a
//     plugin whose caller was killed mid-ADD carries on and sets up
//     masquerading, leases and port forwarding that no record mentions,
//     maybe after garbage collection has already undone the attachment.
//   - During an ADD it inherits, as file descriptor 3, the open state
//     lock of the Attach that runs it (see withPluginLock). A flock
//     belongs to the open file, not to a process, so the lock is held for
//     as long as any process holding that descriptor lives: the plugin,
//     and the IPAM plugin or iptables it runs in turn, which inherit it
//     too. Prune and DetachAll take the lock exclusively, and so wait for
//     the last of them before undoing anything.
type boundExec struct {
	stderr io.Writer // what plugins print there
	version.PluginDecoder
}

// textBusyRetries bounds the retries of a plugin whose binary is being
// written ("text file busy"), as when plugins are upgraded in place.
const textBusyRetries = 5

func (e boundExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	for try := 0; ; try++ {
		out, stderr, err := e.run(ctx, path, stdin, env)
		if errors.Is(err, syscall.ETXTBSY) && try < textBusyRetries {
			select {
			case <-time.After(time.Second):
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if err != nil {
			return nil, pluginFailure(err, out, stderr)
		}
		if e.stderr != nil && len(stderr) > 0 {
			e.stderr.Write(stderr)
		}
		return out, nil
	}
}

func (e boundExec) run(ctx context.Context, path string, stdin []byte, env []string) (stdout, stderr []byte, err error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if lock := pluginLock(ctx); lock != nil {
		cmd.ExtraFiles = []*os.File{lock}
	}
	// The parent-death signal comes when the thread that forked ends,
	// not the process. The runtime ends a thread when a goroutine locked
	// to it returns, as osthread.Go's do: were the forking thread handed
	// to one of them while the plugin runs, the plugin would be killed.
	// Locked to this goroutine, it runs nothing else until the plugin is
	// done.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = cmd.Run()
	return out.Bytes(), errOut.Bytes(), err
}

// pluginFailure makes the error of a failed plugin run a *types.Error, as
// libcni's callers expect: the one the plugin printed if it printed one.
func pluginFailure(err error, stdout, stderr []byte) error {
	var te types.Error
	switch {
	case len(stdout) > 0 && json.Unmarshal(stdout, &te) == nil && te.Msg != "":
		return &te
	case len(stdout) > 0:
		te.Msg = fmt.Sprintf("plugin failed (%v), printing %q", err, clipOutput(stdout))
	case len(stderr) > 0:
		te.Msg = fmt.Sprintf("plugin failed (%v): %q", err, clipOutput(stderr))
	default:
		te.Msg = fmt.Sprintf("plugin failed with no message: %v", err)
	}
	return &te
}

// clipOutput bounds what a plugin printed to what an error can carry.
func clipOutput(b []byte) []byte {
	const max = 4096
	if len(b) > max {
		return append(b[:max:max], "..."...)
	}
	return bytes.TrimSpace(b)
}

func (e boundExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

type pluginLockKey struct{}

// withPluginLock returns ctx with the open state lock that the plugins
// run under it inherit (see boundExec).
func withPluginLock(ctx context.Context, l *fileLock) context.Context {
	if l == nil || l.f == nil {
		return ctx
	}
	return context.WithValue(ctx, pluginLockKey{}, l.f)
}

func pluginLock(ctx context.Context) *os.File {
	f, _ := ctx.Value(pluginLockKey{}).(*os.File)
	return f
}
