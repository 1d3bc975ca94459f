package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// What berth does not understand fails, with status 125, and the message
// names what it did not understand.
func TestUsageErrors(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string // all in the one-line message
	}{
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate" for "berth"`, "image"}},
		{[]string{"image", "sync", "x", "y"}, []string{`unknown command "sync" for "berth image"`, "import"}},
		{[]string{"image", "lss"}, []string{`unknown command "lss" for "berth image"`, "did you mean ls?"}},
		{[]string{"network", "attach"}, []string{`unknown command "attach" for "berth network"`}},
		{[]string{"volume", "mount", "x"}, []string{`unknown command "mount" for "berth volume"`}},
		{[]string{"image"}, []string{`"berth image" needs a command`, "import", "berth image --help"}},
		{[]string{"network"}, []string{`"berth network" needs a command`}},
		{[]string{"volume"}, []string{`"berth volume" needs a command`, "prune"}},
		{[]string{"completion"}, []string{`"berth completion" needs a command`, "bash"}},
		{[]string{"run", "--bogus", "alpine"}, []string{"berth run: unknown flag: --bogus"}},
		{[]string{"--bogus", "ps"}, []string{"unknown flag: --bogus"}},
		{[]string{"image", "ls", "--bogus"}, []string{"berth image ls: unknown flag: --bogus"}},
		{[]string{"run", "--pids-limit", "many", "alpine"}, []string{"--pids-limit"}},
		{[]string{"run"}, []string{"berth run: requires at least 1 arg"}},
		{[]string{"image", "inspect"}, []string{"berth image inspect: accepts 1 arg"}},
		{[]string{"ps", "extra"}, []string{"berth ps: unknown command \"extra\""}},
		{[]string{"volume", "create"}, []string{"berth volume create: accepts 1 arg"}},
		{[]string{"help", "bogus"}, []string{`unknown help topic "bogus"`}},
		{[]string{"help", "image", "sync"}, []string{`unknown help topic "sync"`}},
		{[]string{"pull"}, []string{"berth pull: accepts 1 arg"}},
		{[]string{"image", "push", "a", "b", "c"}, []string{"berth image push: accepts between 1 and 2 arg"}},
		{[]string{"login", "a", "b"}, []string{"berth login: accepts at most 1 arg"}},
		{[]string{"logout", "--bogus"}, []string{"berth logout: unknown flag: --bogus"}},
	} {
		stdout, stderr, code := berthExit(t, root, c.args...)
		ok := code == 125 && strings.Count(stderr, "\n") == 1 && strings.HasPrefix(stderr, "berth: ") && stdout == ""
		for _, w := range c.want {
			ok = ok && strings.Contains(stderr, w)
		}
		if !ok {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want 125 and one line saying %q", strings.Join(c.args, " "), code, stdout, stderr, c.want)
		}
	}
	// Asking for help is not an error.
	for _, args := range [][]string{{"--help"}, {"image", "--help"}, {"help", "image"}, {"help", "image", "ls"}, {"help"}, {"volume", "rm", "--help"}} {
		if stdout, stderr, code := berthExit(t, root, args...); code != 0 || !strings.Contains(stdout, "Usage:") {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want the help and 0", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	// A group's usage does not offer to run it alone; its commands' do.
	if stdout, _, _ := berthExit(t, root, "image", "--help"); strings.Contains(stdout, "berth image [flags]") || !strings.Contains(stdout, "berth image [command]") {
		t.Errorf("berth image --help:\n%s", stdout)
	}
	if stdout, _, _ := berthExit(t, root, "volume", "rm", "--help"); !strings.Contains(stdout, "berth volume rm [-f] NAME...") {
		t.Errorf("berth volume rm --help:\n%s", stdout)
	}
}

// Every command group, those added later included, refuses to be run
// alone or with a command it does not have: with status 125 and a line
// on stderr, never its help on stdout and status 0, which a script would
// take for success.
func TestEveryGroupRefusesNonsense(t *testing.T) {
	root := t.TempDir()
	var groups [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if c.HasSubCommands() {
			groups = append(groups, path)
		}
		for _, sub := range c.Commands() {
			walk(sub, append(slices.Clip(path), sub.Name()))
		}
	}
	walk(newRootCommand(), nil)
	if len(groups) < 6 {
		t.Fatalf("found only the groups %q", groups)
	}
	for _, g := range groups {
		for _, args := range [][]string{g, append(slices.Clip(g), "bogus-command")} {
			if len(args) == 0 {
				continue // berth alone prints its help, as every command does
			}
			stdout, stderr, code := berthExit(t, root, args...)
			if code != exitSetup || stdout != "" || !strings.HasPrefix(stderr, "berth: ") || strings.Count(stderr, "\n") != 1 {
				t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want 125 and one line on stderr", strings.Join(args, " "), code, stdout, stderr)
			}
		}
	}
}

// berth network connect and disconnect refuse, whatever their arguments,
// and say what to do instead.
func TestNetworkConnectRefused(t *testing.T) {
	root := t.TempDir()
	for _, args := range [][]string{{"network", "connect"}, {"network", "connect", "net1", "db"}, {"network", "disconnect", "net1", "db"}} {
		stdout, stderr, code := berthExit(t, root, args...)
		if code != exitFailure || stdout != "" || !strings.Contains(stderr, "not supported for a running sandbox") || !strings.Contains(stderr, "--net") {
			t.Errorf("berth %s: exit %d, stdout %q, stderr %q; want 1 and a refusal saying what to do", strings.Join(args, " "), code, stdout, stderr)
		}
	}
}
