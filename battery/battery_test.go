package battery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/security"
)

// A variant is a security configuration the battery runs cases under.
type variant struct {
	name   string
	config func() *security.Config
}

var (
	presetDefault = variant{"Default", security.Default}
	presetStrict  = variant{"Strict", security.Strict}
	// Default with a capability given back that it drops (or should):
	// with it, what refuses a device or a forged packet must be the
	// device cgroup or the network's filter, not the missing capability.
	defaultWithMknod  = variant{"DefaultWithMknod", func() *security.Config { return withCapability(security.Default(), "CAP_MKNOD") }}
	defaultWithNetRaw = variant{"DefaultWithNetRaw", func() *security.Config { return withCapability(security.Default(), "CAP_NET_RAW") }}

	variants = []variant{presetDefault, presetStrict, defaultWithMknod, defaultWithNetRaw}
)

// withCapability returns c with capability name in its set.
func withCapability(c *security.Config, name string) *security.Config {
	if !slices.Contains(c.Capabilities, name) {
		c.Capabilities = append(c.Capabilities, name)
	}
	return c
}

// A hostile case is one attack on the host and what must stop it.
type hostile struct {
	name string
	// attacks says what of the host the case goes for, for the failure
	// message.
	attacks string
	// also lists the variants to run besides Default and Strict.
	also []variant
	// kept names variants under which the attack is allowed on purpose
	// (SECURITY.md says so, and which preset prevents it), with why.
	kept map[string]string
	// prepare sets the attacker's arguments and the sandbox's options,
	// and registers host checks; it may skip the case.
	prepare func(t *testing.T, a *attempt)
	// run replaces the ordinary run: one sandbox running the attacker.
	run func(t *testing.T, a *attempt)
	// judge replaces the verdict's ordinary reading; it returns what
	// leaked, or "" when the attack was refused.
	judge func(a *attempt) string
	// errno, if set, is the errno the refusal must carry: that of the
	// protection under test, not some other failure.
	errno string
}

// An attempt is one case run under one variant.
type attempt struct {
	variant string
	sec     *security.Config
	opts    *sandbox.Options
	// args are the attacker's case and key=value arguments.
	args []string
	// marker is random, for the case to forge and the host to look for.
	marker string
	checks []func() string
	// hold says the attacker waits, once it has given its verdict, for
	// the host checks to run while it is still there.
	hold bool
	// follow is the second sandbox of a planted-symlink case.
	follow *plantedLink
	// execLeak is what a host-tool case saw go wrong.
	execLeak string

	res            *sandbox.Result
	stdout, stderr syncBuffer
	verdict        *verdict
}

// verdict is the attacker's report (internal/attacker's Verdict).
type verdict struct {
	Case      string `json:"case"`
	Attempted bool   `json:"attempted"`
	Succeeded bool   `json:"succeeded"`
	Errno     string `json:"errno"`
	Step      string `json:"step"`
	Detail    string `json:"detail"`
	Count     int64  `json:"count"`
}

func (v *verdict) String() string {
	if v.Errno != "" {
		return fmt.Sprintf("%s at %s (%s)", v.Errno, v.Step, v.Detail)
	}
	return v.Detail
}

// attack sets the attacker's case and arguments.
func (a *attempt) attack(name string, kv ...any) {
	a.args = []string{name}
	for i := 0; i+1 < len(kv); i += 2 {
		a.args = append(a.args, fmt.Sprintf("%v=%v", kv[i], kv[i+1]))
	}
}

// check registers a host-side check, run once the attacker has given its
// verdict (after its sandbox has ended, or while it holds): it returns
// what reached the host, or "".
func (a *attempt) check(fn func() string) { a.checks = append(a.checks, fn) }

// mount adds a bind mount.
func (a *attempt) mount(src, dst string, readOnly bool) {
	a.opts.Mounts = append(a.opts.Mounts, sandbox.Mount{Source: src, Destination: dst, ReadOnly: readOnly})
}

// parallelSandboxes bounds how many sandboxes the battery runs at once:
// the machines it runs on are shared.
var parallelSandboxes = make(chan struct{}, 4)

// TestBattery runs every hostile case under Default and Strict, and
// device and network cases also with the capability Default drops given
// back. Subtests are named <variant>/<case>.
func TestBattery(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			for _, c := range cases() {
				if v.name != presetDefault.name && v.name != presetStrict.name && !slices.ContainsFunc(c.also, func(x variant) bool { return x.name == v.name }) {
					continue
				}
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					parallelSandboxes <- struct{}{}
					defer func() { <-parallelSandboxes }()
					runCase(t, c, v)
				})
			}
		})
	}
}

// The issue asks for at least 50 hostile workloads; each name must say
// which one failed.
func TestBatteryCases(t *testing.T) {
	all := cases()
	if len(all) < 50 {
		t.Errorf("the battery has %d cases, want at least 50", len(all))
	}
	seen := map[string]bool{}
	for _, c := range all {
		if seen[c.name] {
			t.Errorf("two cases are named %s", c.name)
		}
		seen[c.name] = true
		if c.attacks == "" || (c.prepare == nil && c.run == nil) {
			t.Errorf("case %s says nothing of what it attacks or how", c.name)
		}
	}
}

// cases is the battery, in the order.
func cases() []hostile {
	var all []hostile
	for _, group := range [][]hostile{deviceCases(), networkCases(), stdioCases(), volumeCases(), hostToolCases(), limitCases(), classicCases(), etcLinkCases()} {
		all = append(all, group...)
	}
	return all
}

func runCase(t *testing.T, c hostile, v variant) {
	for _, leak := range attemptCase(t, c, v, nil) {
		t.Error(leak)
	}
}

// attemptCase runs c under v, with weaken applied to the attempt if set,
// and returns what leaked: the verdict's reading and the host checks'.
func attemptCase(t *testing.T, c hostile, v variant, weaken func(*testing.T, *attempt)) []string {
	if why, ok := c.kept[v.name]; ok {
		t.Skipf("allowed under %s on purpose: %s", v.name, why)
	}
	a := &attempt{variant: v.name, sec: v.config(), opts: options(), marker: "berth-battery-" + randomHex(8)}
	a.opts.Security = a.sec
	if c.prepare != nil {
		c.prepare(t, a)
	}
	if weaken != nil {
		weaken(t, a)
	}
	if c.run != nil {
		c.run(t, a)
	} else {
		a.runSandbox(t)
	}
	if a.verdict != nil {
		t.Logf("verdict: attempted %v, succeeded %v: %s", a.verdict.Attempted, a.verdict.Succeeded, a.verdict)
	}
	judge := c.judge
	if judge == nil {
		judge = func(a *attempt) string { return ordinaryJudgement(a, c.errno) }
	}
	var leaks []string
	if leak := judge(a); leak != "" {
		leaks = append(leaks, fmt.Sprintf("%s under %s is not refused (%s): %s", c.name, v.name, c.attacks, leak))
	}
	for _, check := range a.checks {
		if leak := check(); leak != "" {
			leaks = append(leaks, fmt.Sprintf("%s under %s reached the host (%s): %s", c.name, v.name, c.attacks, leak))
		}
	}
	return leaks
}

// ordinaryJudgement reads the verdict: the attack must have been made and
// refused, with errno if one is asked for.
func ordinaryJudgement(a *attempt, errno string) string {
	v := a.verdict
	switch {
	case v == nil:
		return fmt.Sprintf("the attacker gave no verdict (%s; stderr %q)", a.exit(), a.stderr.String())
	case !v.Attempted:
		return "the attack could not even be made, so nothing was tested: " + v.Detail
	case v.Succeeded:
		return v.Detail
	case errno != "" && v.Errno != errno:
		return fmt.Sprintf("refused, but with %s at %s rather than %s: not by the protection under test (%s)", v.Errno, v.Step, errno, v.Detail)
	}
	return ""
}

func (a *attempt) exit() string {
	if a.res == nil {
		return "no result"
	}
	return fmt.Sprintf("exit %d, signal %v, OOM-killed %v", a.res.ExitCode, a.res.Signal, a.res.OOMKilled)
}

// attackerTimeout bounds every wait on an attacker's sandbox.
const attackerTimeout = 2 * time.Minute

// runSandbox runs the attacker in a sandbox and reads its verdict.
func (a *attempt) runSandbox(t *testing.T) {
	t.Helper()
	if a.hold {
		a.runHeld(t)
		return
	}
	if err := a.run(); err != nil {
		t.Fatalf("run the attacker: %v", err)
	}
}

// run runs the attacker to its end and reads its verdict.
func (a *attempt) run() error {
	ctx, cancel := context.WithTimeout(context.Background(), attackerTimeout)
	defer cancel()
	sb := a.newSandbox()
	defer sb.Close()
	res, err := sb.Run(ctx)
	if err != nil {
		return err
	}
	a.res = res
	a.verdict = lastVerdict(a.stderr.String())
	return nil
}

// start starts the attacker under attackerTimeout; done cancels that and
// closes the sandbox.
func (a *attempt) start(t *testing.T) (ctx context.Context, sb *sandbox.Sandbox, done func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), attackerTimeout)
	sb = a.newSandbox()
	done = func() { sb.Close(); cancel() }
	if err := sb.Start(ctx); err != nil {
		done()
		t.Fatalf("start the attacker: %v", err)
	}
	return ctx, sb, done
}

// runHeld starts the attacker, waits for its verdict, runs the host
// checks while it is still there, and then kills it.
func (a *attempt) runHeld(t *testing.T) {
	t.Helper()
	ctx, sb, done := a.start(t)
	defer done()
	a.verdict = a.awaitVerdict(ctx)
	var leaks []string
	for _, check := range a.checks {
		leaks = append(leaks, check())
	}
	a.checks = nil
	for _, l := range leaks {
		a.check(func() string { return l })
	}
	sb.Kill()
	a.res, _ = sb.Wait()
}

// awaitVerdict waits for the running attacker's verdict, or for ctx.
func (a *attempt) awaitVerdict(ctx context.Context) *verdict {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if v := lastVerdict(a.stderr.String()); v != nil {
			return v
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// newSandbox returns the attacker's sandbox, not started.
func (a *attempt) newSandbox() *sandbox.Sandbox {
	o := a.opts
	o.Args = append([]string{attackerDir + "/attacker"}, a.args...)
	o.Stderr = &a.stderr
	if o.Stdout == nil {
		o.Stdout = &a.stdout
	}
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	return sandbox.New(image, o)
}

// lastVerdict is the last verdict line in out.
func lastVerdict(out string) *verdict {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.HasPrefix(lines[i], "{") {
			continue
		}
		var v verdict
		if json.Unmarshal([]byte(lines[i]), &v) == nil {
			return &v
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// syncBuffer is a bytes.Buffer a test may read while a sandbox's output
// is still being copied into it.
type syncBuffer = testenv.SyncBuffer
