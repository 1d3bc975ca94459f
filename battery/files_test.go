package battery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/sandbox"
)

// stdioCases hand the workload a host file as its standard output, as
// `berth run ... >> job.log` does, with what the host wrote there
// before. The workload must only ever see a pipe.
func stdioCases() []hostile {
	withLog := func(name, attacks string, attack string, intact bool) hostile {
		return hostile{
			name: name, attacks: attacks,
			prepare: func(t *testing.T, a *attempt) {
				log, before := hostLog(t, a)
				a.opts.Stdout = log
				a.attack(attack, "marker", a.marker, "text", "OVERWRITTEN-BY-THE-SANDBOX")
				if intact {
					a.check(func() string {
						got, err := os.ReadFile(log.Name())
						if err != nil {
							return err.Error()
						}
						if !strings.HasPrefix(string(got), before) {
							return fmt.Sprintf("the host's log now reads %q, not %q first", got, before)
						}
						return ""
					})
				}
			},
		}
	}
	return []hostile{
		withLog("stdio-reopen-read", "reopens the host file given as stdout and reads what the host wrote there", "stdout-read", false),
		withLog("stdio-overwrite", "reopens the host file given as stdout for writing and overwrites it", "stdout-overwrite", true),
		withLog("stdio-truncate", "truncates the host file given as stdout (ftruncate(1, 0))", "stdout-truncate", true),
		withLog("stdio-host-path", "learns the host path of the file given as stdout", "stdout-path", false),
	}
}

// hostLog is a host file with a line of the host's in it, open for
// appending as a shell's >> opens it.
func hostLog(t *testing.T, a *attempt) (*os.File, string) {
	t.Helper()
	path := filepath.Join(searchableTempDir(t), "job.log")
	before := "HOST-SECRET " + a.marker + "\n"
	if err := os.WriteFile(path, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, before
}

// volumeCases attack the host through bind-mounted host directories.
func volumeCases() []hostile {
	return []hostile{
		{
			name:    "vol-symlink-dir",
			attacks: "plants a symlink in a volume that a later bind of VOL/sub follows to a host directory",
			prepare: func(t *testing.T, a *attempt) {
				target := searchableTempDir(t)
				os.WriteFile(filepath.Join(target, "host-secret"), []byte("secret\n"), 0o644)
				a.check(func() string {
					if fileExists(filepath.Join(target, "pwned")) {
						return "the sandbox wrote into the host directory " + target
					}
					return ""
				})
				a.follow = &plantedLink{target: target, attack: []any{"read-through", "path", "/data", "secret", "host-secret"}}
			},
			run: runPlantedLink, judge: plantedLinkJudgement,
		},
		{
			name:    "vol-symlink-file",
			attacks: "plants a symlink in a volume that a later bind of VOL/sub follows to a host file",
			prepare: func(t *testing.T, a *attempt) {
				target := filepath.Join(searchableTempDir(t), "host-secret")
				os.WriteFile(target, []byte("host secret\n"), 0o644)
				a.follow = &plantedLink{target: target, attack: []any{"read-masked", "path", "/data"}}
			},
			run: runPlantedLink, judge: plantedLinkJudgement,
		},
		{
			name: "vol-devnode-mknod", also: []variant{defaultWithMknod}, errno: "EPERM",
			attacks: "leaves a device node for the host's loop device in a host directory",
			prepare: func(t *testing.T, a *attempt) {
				dir := volumeDir(t)
				a.mount(dir, "/vol", false)
				a.attack("mknod-in", "path", "/vol/node", "type", "b", "major", 7, "minor", loop(t).minor)
				a.check(func() string {
					var st unix.Stat_t
					if unix.Lstat(filepath.Join(dir, "node"), &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
						return fmt.Sprintf("a device node (mode %o) is in the host directory", st.Mode)
					}
					return ""
				})
			},
		},
		{
			name:    "vol-setuid",
			attacks: "leaves a setuid-root program in a host directory",
			kept: map[string]string{
				presetDefault.name: "root in a Default sandbox is the host's root and may chmod its own files; nosuid covers only the sandbox's own view (SECURITY.md; Strict's user namespace prevents it)",
			},
			prepare: func(t *testing.T, a *attempt) {
				dir := volumeDir(t)
				a.mount(dir, "/vol", false)
				a.attack("setuid-in", "path", "/vol/suid")
				a.check(func() string {
					var st unix.Stat_t
					if unix.Lstat(filepath.Join(dir, "suid"), &st) == nil && st.Mode&unix.S_ISUID != 0 && st.Uid == 0 {
						return "a setuid program owned by the host's root is in the host directory"
					}
					return ""
				})
			},
			judge: func(a *attempt) string { return madeJudgement(a) },
		},
		{
			name:    "vol-mount-flags",
			attacks: "finds a volume mounted without nosuid and nodev",
			prepare: func(t *testing.T, a *attempt) {
				a.mount(volumeDir(t), "/vol", false)
				a.attack("mount-flags", "path", "/vol")
			},
		},
	}
}

// madeJudgement asks only that the attack was made: the host check says
// whether it reached anything.
func madeJudgement(a *attempt) string {
	if a.verdict == nil {
		return fmt.Sprintf("the attacker gave no verdict (%s; stderr %q)", a.exit(), a.stderr.String())
	}
	return ""
}

// plantedLink is the second half of a symlink case: what the next
// sandbox, given VOL/sub, does with it.
type plantedLink struct {
	target   string
	attack   []any
	startErr error
	next     *attempt
}

// runPlantedLink runs a sandbox that plants VOL/sub -> target, and then
// one that is given VOL/sub as a volume.
func runPlantedLink(t *testing.T, a *attempt) {
	vol := volumeDir(t)
	a.mount(vol, "/vol", false)
	a.attack("plant-symlink", "path", "/vol/sub", "target", a.follow.target)
	a.runSandbox(t)
	if a.verdict == nil || !a.verdict.Succeeded {
		return
	}
	next := &attempt{variant: a.variant, sec: a.sec, opts: options(), marker: a.marker}
	next.opts.Security = a.sec
	next.mount(filepath.Join(vol, "sub"), "/data", false)
	next.attack(a.follow.attack[0].(string), a.follow.attack[1:]...)
	a.follow.next = next
	// Refusing the planted link is one right answer.
	a.follow.startErr = next.run()
}

func plantedLinkJudgement(a *attempt) string {
	if a.verdict == nil || !a.verdict.Attempted {
		return ordinaryJudgement(a, "")
	}
	if !a.verdict.Succeeded {
		return "" // the link could not even be planted
	}
	f := a.follow
	if f.startErr != nil {
		return ""
	}
	if leak := ordinaryJudgement(f.next, ""); leak != "" {
		return "the next sandbox, given VOL/sub, got the host's " + f.target + ": " + leak
	}
	return ""
}

// hostToolCases attack what berth reads from inside a sandbox on the
// host's side.
func hostToolCases() []hostile {
	fifo := func(name, file, user string) hostile {
		return hostile{
			name:    name,
			attacks: "replaces " + file + " with a FIFO so that `berth exec -u " + user + "` hangs on the host",
			prepare: func(t *testing.T, a *attempt) {
				a.attack("plant-fifo", "path", file)
			},
			run: func(t *testing.T, a *attempt) { runExecThroughFIFO(t, a, user) },
			judge: func(a *attempt) string {
				if a.verdict == nil || !a.verdict.Attempted {
					return ordinaryJudgement(a, "")
				}
				return a.execLeak
			},
		}
	}
	return []hostile{
		fifo("exec-fifo-passwd", "/etc/passwd", "nobody"),
		fifo("exec-fifo-group", "/etc/group", "nobody:nobody"),
	}
}

// runExecThroughFIFO starts the attacker, which plants its FIFO and holds
// it, and then Execs a program as user in its sandbox: Exec must come
// back with an error well before its context runs out, not wait on the
// FIFO.
func runExecThroughFIFO(t *testing.T, a *attempt, user string) {
	ctx, sb, stop := a.start(t)
	defer stop()
	a.verdict = a.awaitVerdict(ctx)
	planted := a.verdict != nil && a.verdict.Succeeded

	execCtx, execCancel := context.WithTimeout(ctx, 10*time.Second)
	defer execCancel()
	type outcome struct {
		res *sandbox.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := sb.Exec(execCtx, &sandbox.ExecOptions{Args: []string{attackerDir + "/attacker", "noop"}, User: user})
		done <- outcome{res, err}
	}()
	var got outcome
	select {
	case got = <-done:
	case <-time.After(20 * time.Second):
		a.execLeak = "Exec -u " + user + " was still waiting on the sandbox's FIFO 20s later, its 10s context long gone"
		// Killing the sandbox closes the FIFO's writer, which ends the
		// read Exec is stuck in.
		sb.Kill()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("Exec did not return even after the sandbox was killed")
		}
		return
	}
	switch {
	case errors.Is(got.err, context.DeadlineExceeded) || (got.res != nil && got.res.Canceled):
		a.execLeak = "Exec -u " + user + " only returned when its context ran out"
	case planted && got.err == nil:
		a.execLeak = fmt.Sprintf("Exec -u %s ran (%+v) though the sandbox's user database is a FIFO", user, got.res)
	}
	sb.Kill()
	a.res, _ = sb.Wait()
}
