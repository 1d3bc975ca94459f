package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
)

func newPortCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "port NAME [PORT[/PROTO]]",
		Short: "List a sandbox's published ports, with the host ports they were given",
		Long: `List a sandbox's published ports (-p) as "80/tcp -> 127.0.0.1:32768",
with the host port actually bound: -p 127.0.0.1::80 lets berth choose
one. With PORT, print only where that port of the sandbox is published,
as HOST:PORT lines.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var wantPort uint16
			wantProto := ""
			if len(args) == 2 {
				num, proto, hasProto := strings.Cut(args[1], "/")
				n, err := strconv.ParseUint(num, 10, 16)
				if err != nil || n == 0 || hasProto && proto != "tcp" && proto != "udp" {
					return invalidFlag("%s: want PORT[/tcp|/udp], PORT from 1 to 65535", clip.Quote(args[1]))
				}
				wantPort, wantProto = uint16(n), proto
				if wantProto == "" {
					wantProto = "tcp"
				}
			}
			l, err := g.find(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			found := false
			for _, p := range g.ports(cmd.Context(), l) {
				ip := p.HostIP
				if ip == "" {
					ip = "0.0.0.0"
				}
				if wantPort == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%d/%s -> %s\n", p.ContainerPort, protocol(p), hostAddr(ip, p.HostPort))
					continue
				}
				if p.ContainerPort == wantPort && protocol(p) == wantProto {
					fmt.Fprintln(cmd.OutOrStdout(), hostAddr(ip, p.HostPort))
					found = true
				}
			}
			if wantPort != 0 && !found {
				return fmt.Errorf("no public port %d/%s published for %s", wantPort, wantProto, clip.Quote(args[0]))
			}
			return nil
		},
	}
}
