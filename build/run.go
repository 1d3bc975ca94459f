package build

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/sandbox"
)

// runStep runs a RUN instruction in a sandbox of the stage's image, with
// the Default security settings, no host mounts and Options.Network, and
// commits what it changed.
func (b *builder) runStep(ctx context.Context, ss *stageState, s step, c *instructions.RunCommand) (*layerfs.Image, error) {
	if len(c.FlagsUsed) > 0 {
		return nil, fmt.Errorf("RUN --%s: %w", c.FlagsUsed[0], ErrUnsupported)
	}
	if len(c.Files) > 0 {
		return nil, fmt.Errorf("RUN with a here-document: %w", ErrUnsupported)
	}
	argv := ss.cfg.commandLine(c.ShellDependantCmdLine)
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command")
	}
	// Build arguments are in the command's environment but not in the
	// image's; ENV of the same name wins, as in Docker.
	var env []string
	cfgEnv := map[string]bool{}
	for _, e := range ss.cfg.cfg.Env {
		k, _, _ := strings.Cut(e, "=")
		cfgEnv[k] = true
	}
	for _, k := range sortedKeys(ss.args) {
		if !cfgEnv[k] {
			env = append(env, k+"="+ss.args[k])
		}
	}
	out := &lockedWriter{w: b.opts.Output}
	sb := sandbox.NewFromImage(ss.img, &sandbox.Options{
		// RUN runs its command alone, as Docker's does: the stage's
		// ENTRYPOINT is the image's, for later, not the step's.
		Entrypoint: []string{},
		Args:       argv,
		Env:        env,
		Dir:        ss.cfg.cfg.WorkingDir,
		User:       ss.cfg.cfg.User,
		Stdout:     out,
		Stderr:     out,
		Network:    b.opts.Network,
		Storage:    b.store,
		Cgroups:    b.opts.Cgroups,
		StateDir:   b.opts.StateDir,
		KeepRootfs: true,
		Logger:     b.opts.Logger,
	})
	defer sb.Close()
	if err := sb.Start(ctx); err != nil {
		return nil, err
	}
	res, err := sb.Wait()
	if err != nil {
		return nil, err
	}
	if !res.Success() {
		if res.Canceled || ctx.Err() != nil {
			return nil, fmt.Errorf("stopped: %w", context.Cause(ctx))
		}
		if res.Signal != 0 {
			return nil, fmt.Errorf("killed by signal %v", res.Signal)
		}
		return nil, fmt.Errorf("exit status %d", res.ExitCode)
	}
	return sb.Commit(ctx, "", &sandbox.CommitOptions{Config: ss.cfg.cfg.DeepCopy(), CreatedBy: s.text, NoPause: true})
}

// lockedWriter lets the sandbox's stdout and stderr copiers share one
// writer that need not be safe for concurrent use.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func randomID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
