package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
)

// A usageError means the command line was not understood: an unknown
// command or flag, a flag's bad value, too many or too few arguments.
// berth exits 125 for it, as podman does for all of these and Docker for
// flags, so that no script mistakes it for the workload's status 1.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// strictUsage makes every command in root's tree refuse what it does not
// understand; it is called once the tree is complete, so that groups
// added later get it without doing anything. Left to itself, cobra runs a command group
// (`berth image`) given an unknown subcommand, or none, by printing its
// help and exiting 0, so that `berth image sync x` looks to a script as if
// it worked.
//
// A bare group is an error too, unlike Docker's (which prints its help
// and exits 0) and like podman's: the group did nothing that was asked,
// and `berth $GROUP $CMD` with an empty $CMD is the same mistake as one
// with a misspelt $CMD. `berth image --help` asks for the help.
func strictUsage(root *cobra.Command) {
	// cobra adds these itself on Execute, too late for the walk below.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "help" && c.Run != nil {
			strictHelp(c)
		}
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%s: %w", c.CommandPath(), err)}
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		switch {
		case c.HasSubCommands() && !c.Runnable():
			c.Args = unknownSubcommand
			c.RunE = missingSubcommand
			c.SetUsageFunc(groupUsage)
		case c.Args != nil:
			args := c.Args
			c.Args = func(c *cobra.Command, a []string) error {
				if err := args(c, a); err != nil {
					return usageError{fmt.Errorf("%s: %w", c.CommandPath(), err)}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// strictHelp makes `berth help TOPIC` fail for a topic that is no
// command, where cobra prints the top-level help and exits 0.
func strictHelp(help *cobra.Command) {
	show := help.Run
	help.Run = nil
	help.RunE = func(c *cobra.Command, args []string) error {
		if cmd, rest, err := c.Root().Find(args); err != nil || len(rest) > 0 {
			topic := strings.Join(args, " ")
			if cmd != nil && len(rest) > 0 {
				topic = rest[0]
			}
			return usageError{fmt.Errorf("unknown help topic %s; see %s --help", clip.Quote(topic), c.Root().Name())}
		}
		show(c, args)
		return nil
	}
}

// groupUsage prints a group's usage as cobra does for a command that
// runs nothing itself, without the "berth image [flags]" line that
// missingSubcommand, which makes it runnable, would otherwise add.
// Subcommands inherit it, and get the usual usage.
func groupUsage(c *cobra.Command) error {
	usage := (&cobra.Command{}).UsageFunc() // cobra's own
	if c.HasSubCommands() {
		run := c.RunE
		c.RunE = nil
		defer func() { c.RunE = run }()
	}
	return usage(c)
}

// unknownSubcommand is the Args of a command group: it takes none, so an
// argument cobra did not find a subcommand for is an unknown one.
func unknownSubcommand(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %s for %q", clip.Quote(args[0]), c.CommandPath())
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2 // cobra's default, which it sets only for itself
	}
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	} else {
		msg += " (" + subcommandList(c) + ")"
	}
	return usageError{fmt.Errorf("%s", msg)}
}

// missingSubcommand is the RunE of a command group run alone.
func missingSubcommand(c *cobra.Command, _ []string) error {
	return usageError{fmt.Errorf("%q needs a command (%s); see %s --help", c.CommandPath(), subcommandList(c), c.CommandPath())}
}

func subcommandList(c *cobra.Command) string {
	var names []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			names = append(names, sub.Name())
		}
	}
	return strings.Join(names, ", ")
}

// workloadAnnotation marks the commands whose exit status is their
// workload's (see exitCode).
const workloadAnnotation = "berth.workload"

func markWorkload(c *cobra.Command) {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[workloadAnnotation] = "true"
}

func startsWorkload(c *cobra.Command) bool {
	return c != nil && c.Annotations[workloadAnnotation] == "true"
}

// invalidFlag returns a usageError with the message fmt.Errorf makes, for
// a flag whose value parsed but makes no sense (-m -1, -e =value).
func invalidFlag(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}
