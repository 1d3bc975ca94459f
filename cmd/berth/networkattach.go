package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// networkAttachCommands are `berth network connect` and `disconnect`,
// which Docker users reach for: berth cannot do either to a running
// sandbox, whose network namespace, routes, filters and /etc/hosts are
// set up once, before its workload starts. They refuse, with status 1
// and what to do instead, rather than leave the words to cobra, which
// would print the group's help and exit 0 as if it had worked.
func networkAttachCommands() []*cobra.Command {
	refuse := func(c *cobra.Command, _ []string) error {
		return fmt.Errorf("%s is not supported for a running sandbox: its network is set up when it starts; "+
			"run it again with berth run --net NETWORK (or share another sandbox's with --net container:NAME)",
			c.CommandPath())
	}
	return []*cobra.Command{
		{
			Use:   "connect NETWORK SANDBOX",
			Short: "Not supported: connect a running sandbox to a network (run it with --net instead)",
			Args:  cobra.ArbitraryArgs,
			RunE:  refuse,
		},
		{
			Use:   "disconnect NETWORK SANDBOX",
			Short: "Not supported: disconnect a running sandbox from a network (run it with --net instead)",
			Args:  cobra.ArbitraryArgs,
			RunE:  refuse,
		},
	}
}
