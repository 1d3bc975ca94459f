package main

import (
	"strings"
	"testing"
)

// What berth does not understand fails, with status 125, and the message
// names what it did not understand.
func TestUsageErrors(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string // all in the one-line message
	}{
		{[]string{"bogus"}, []string{`unknown command "bogus" for "berth"`, "image"}},
		{[]string{"image", "sync", "x", "y"}, []string{`unknown command "sync" for "berth image"`, "import"}},
		{[]string{"image", "lss"}, []string{`unknown command "lss" for "berth image"`, "did you mean ls?"}},
		{[]string{"network", "connect"}, []string{`unknown command "connect" for "berth network"`}},
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
