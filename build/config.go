package build

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// ErrUnsupported is wrapped by the error for a Dockerfile instruction, or
// an option of one, that berth does not carry out. errors.Is also
// matches errors.ErrUnsupported.
var ErrUnsupported = fmt.Errorf("not supported by berth build: %w", errors.ErrUnsupported)

// defaultShell is what shell-form RUN, CMD and ENTRYPOINT run through
// until a SHELL instruction says otherwise, as under Docker on Linux.
var defaultShell = []string{"/bin/sh", "-c"}

// ApplyChanges applies Dockerfile instructions that change only an
// image's configuration to cfg, as `docker commit --change` does: CMD,
// ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, STOPSIGNAL, HEALTHCHECK,
// SHELL, VOLUME and MAINTAINER (as the "maintainer" label). Any other
// instruction is an error wrapping ErrUnsupported. Each change is one
// instruction, such as `CMD ["sh"]` or `ENV A=1 B=2`;
// variables in ENV, LABEL, EXPOSE, USER, WORKDIR, STOPSIGNAL and VOLUME
// are expanded against cfg's environment, as a Dockerfile's are. As under
// Docker, an ENTRYPOINT clears the Cmd unless a CMD came before it in the
// same changes. On error cfg may hold the changes before the failing one.
func ApplyChanges(cfg *v1.Config, changes []string) error {
	if cfg == nil {
		return errors.New("apply changes: no config")
	}
	st := &configState{cfg: cfg}
	for i, change := range changes {
		if strings.ContainsAny(change, "\n\r") {
			return fmt.Errorf("change %d %q: one instruction per change, without newlines", i+1, change)
		}
		res, err := parser.Parse(strings.NewReader(change))
		if err != nil {
			return fmt.Errorf("change %q: %w", change, unlocated(err))
		}
		if len(res.AST.Children) != 1 {
			return fmt.Errorf("change %q: want one instruction", change)
		}
		node := res.AST.Children[0]
		cmd, err := instructions.ParseCommand(node)
		if err != nil {
			return fmt.Errorf("change %q: %w", change, unlocated(err))
		}
		if err := st.apply(cmd, shell.NewLex(res.EscapeToken), nil); err != nil {
			return fmt.Errorf("change %q: %w", change, err)
		}
	}
	return nil
}

// configState is an image config being changed by a stage's
// instructions, with what Docker's rules need to remember on the way.
type configState struct {
	cfg    *v1.Config
	cmdSet bool // a CMD came earlier in this stage (or these changes)
}

// shell is the shell that shell-form commands run through.
func (st *configState) shell() []string {
	if len(st.cfg.Shell) > 0 {
		return st.cfg.Shell
	}
	return defaultShell
}

// commandLine is the argv of a shell- or exec-form instruction.
func (st *configState) commandLine(c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell && len(c.CmdLine) > 0 {
		return append(append([]string(nil), st.shell()...), strings.Join(c.CmdLine, " "))
	}
	return append([]string(nil), c.CmdLine...)
}

// expander expands words against the config's environment and, with
// ENV overriding them as in Docker, args.
func (st *configState) expander(lex *shell.Lex, args map[string]string) instructions.SingleWordExpander {
	return func(word string) (string, error) {
		env := make([]string, 0, len(args)+len(st.cfg.Env))
		for _, k := range sortedKeys(args) {
			env = append(env, k+"="+args[k])
		}
		env = append(env, st.cfg.Env...)
		out, _, err := lex.ProcessWord(word, shell.EnvsFromSlice(env))
		return out, err
	}
}

// apply changes the config as cmd, an instruction that changes nothing
// but the config, says. Any other instruction is an error wrapping
// ErrUnsupported. args are the build arguments in effect, for expansion.
func (st *configState) apply(cmd instructions.Command, lex *shell.Lex, args map[string]string) error {
	if e, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
		if err := e.Expand(st.expander(lex, args)); err != nil {
			return err
		}
	}
	cfg := st.cfg
	switch c := cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range c.Env {
			cfg.Env = setEnv(cfg.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range c.Labels {
			cfg.Labels[kv.Key] = kv.Value
		}
	case *instructions.MaintainerCommand:
		// Recorded as the config's author by the caller; as a config
		// change alone it has nowhere to go but a label.
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels["maintainer"] = c.Maintainer
	case *instructions.CmdCommand:
		cfg.Cmd = st.commandLine(c.ShellDependantCmdLine)
		cfg.ArgsEscaped = false
		st.cmdSet = true
	case *instructions.EntrypointCommand:
		cfg.Entrypoint = st.commandLine(c.ShellDependantCmdLine)
		if !st.cmdSet {
			cfg.Cmd = nil
		}
	case *instructions.ExposeCommand:
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range c.Ports {
			port, err := exposedPort(p)
			if err != nil {
				return err
			}
			cfg.ExposedPorts[port] = struct{}{}
		}
	case *instructions.UserCommand:
		cfg.User = c.User
	case *instructions.WorkdirCommand:
		cfg.WorkingDir = workdir(cfg.WorkingDir, c.Path)
	case *instructions.StopSignalCommand:
		cfg.StopSignal = c.Signal
	case *instructions.HealthCheckCommand:
		h := c.Health
		cfg.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	case *instructions.ShellCommand:
		cfg.Shell = append([]string(nil), c.Shell...)
	case *instructions.VolumeCommand:
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range c.Volumes {
			if v == "" {
				return errors.New("VOLUME: empty path")
			}
			cfg.Volumes[v] = struct{}{}
		}
	default:
		return fmt.Errorf("%s changes more than the image's config: %w", strings.ToUpper(cmd.Name()), ErrUnsupported)
	}
	return nil
}

// workdir is WORKDIR p taken from the working directory cur: relative
// paths are relative to it, as in Docker.
func workdir(cur, p string) string {
	if !path.IsAbs(p) {
		if cur == "" {
			cur = "/"
		}
		p = path.Join(cur, p)
	}
	return path.Clean(p)
}

// exposedPort is an EXPOSE word in the config's form, "80/tcp".
func exposedPort(p string) (string, error) {
	port, proto, ok := strings.Cut(p, "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return "", fmt.Errorf("EXPOSE %s: protocol %q is not tcp, udp or sctp", p, proto)
	}
	lo, hi, isRange := strings.Cut(port, "-")
	for _, n := range []string{lo, hi} {
		if !isRange && n == hi {
			continue
		}
		if !validPort(n) {
			return "", fmt.Errorf("EXPOSE %s: %q is not a port number", p, n)
		}
	}
	return port + "/" + proto, nil
}

func validPort(s string) bool {
	if s == "" || len(s) > 5 {
		return false
	}
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
		n = n*10 + int(r-'0')
	}
	return n <= 65535
}

// setEnv sets key to value in env, a list of KEY=value, in place of any
// earlier value.
func setEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			continue
		}
		out = append(out, e)
	}
	return append(out, key+"="+value)
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

// unlocated is err without the parser's location wrapping, whose line
// numbers berth states itself in its own form ("Dockerfile:7: ...").
func unlocated(err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && le.Unwrap() != nil {
		return le.Unwrap()
	}
	return err
}
