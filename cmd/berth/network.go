package main

import (
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/netplug"
	"github.com/berth-dev/berth/sandbox"
)

// networkFlags are `berth run`'s network options.
type networkFlags struct {
	net      string
	ports    []string
	dns      []string
	aliases  []string
	addHosts []string
	// plugin: a network plugin (--network-plugin) connects the sandbox,
	// and publishes its ports, instead of netplug.
	plugin bool
}

func (f *networkFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.net, "net", "none", "network: none, host, bridge, the name of a network (berth network create), or container:ID to share a running sandbox's")
	cmd.Flags().StringArrayVarP(&f.ports, "publish", "p", nil, "publish a port: [HOSTIP:][HOSTPORT:]PORT[/udp]; without HOSTPORT, berth picks a free one and prints it on stderr")
	cmd.Flags().StringArrayVar(&f.dns, "dns", nil, "a DNS server for the sandbox (instead of the host's)")
	cmd.Flags().StringArrayVar(&f.aliases, "network-alias", nil, "another name the sandbox has on its network")
	cmd.Flags().StringArrayVar(&f.addHosts, "add-host", nil, "add NAME:IP to the sandbox's /etc/hosts")
}

// apply sets the sandbox options the flags describe.
func (f *networkFlags) apply(g *globals, cmd *cobra.Command, opts *sandbox.Options) error {
	for _, h := range f.addHosts {
		name, ip, ok := strings.Cut(h, ":")
		addr, err := netip.ParseAddr(ip)
		if !ok || name == "" || err != nil {
			return fmt.Errorf("--add-host %q: want NAME:IP", h)
		}
		opts.ExtraHosts = append(opts.ExtraHosts, netplug.HostEntry{IP: addr, Names: []string{name}})
	}
	if id, ok := strings.CutPrefix(f.net, "container:"); ok {
		other, err := sandbox.Open(cmd.Context(), id, opts)
		if err != nil {
			return fmt.Errorf("--net %s: %w", f.net, err)
		}
		opts.JoinNetwork = other.NetworkNamespace()
		if len(f.ports) > 0 {
			return fmt.Errorf("-p with --net %s: publish ports on the sandbox that owns the network", f.net)
		}
		return nil
	}
	if !f.plugin && (f.net != "none" || len(f.ports) > 0) {
		nets, err := g.networks()
		if err != nil {
			return err
		}
		if f.net == "none" {
			return fmt.Errorf("-p needs a network: add --net bridge")
		}
		if opts.Network, err = nets.Get(cmd.Context(), f.net); err != nil {
			return fmt.Errorf("--net %s: %w", f.net, err)
		}
		opts.Networks = nets
	}
	for _, p := range f.ports {
		m, err := netplug.ParsePortMapping(p)
		if err != nil {
			return fmt.Errorf("-p %s: %w", p, err)
		}
		opts.Ports = append(opts.Ports, m)
	}
	if len(f.dns) > 0 {
		d := &netplug.DNSConfig{}
		for _, s := range f.dns {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("--dns %s: %w", s, err)
			}
			d.Nameservers = append(d.Nameservers, a)
		}
		opts.DNS = d
	}
	opts.NetworkAliases = f.aliases
	return nil
}

func newNetworkCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage named networks"}
	var subnet string
	var internal bool
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a bridge network whose sandboxes reach each other by name",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nets, err := g.networks()
			if err != nil {
				return err
			}
			o := &netplug.NetworkOptions{Internal: internal}
			if subnet != "" {
				if o.Subnet, err = netip.ParsePrefix(subnet); err != nil {
					return fmt.Errorf("--subnet %s: %w", subnet, err)
				}
			}
			_, err = nets.Create(cmd.Context(), args[0], o)
			return err
		},
	}
	create.Flags().StringVar(&subnet, "subnet", "", "IPv4 subnet, e.g. 10.214.5.0/24 (default: a free /24)")
	create.Flags().BoolVar(&internal, "internal", false, "no route beyond the host")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nets, err := g.networks()
			if err != nil {
				return err
			}
			infos, err := nets.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tBRIDGE\tSUBNET\tSANDBOXES")
			for _, i := range infos {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", i.Name, i.Bridge, i.Subnet, strings.Join(i.Sandboxes, ","))
			}
			return tw.Flush()
		},
	}
	rm := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove networks no sandbox is attached to",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nets, err := g.networks()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := nets.Remove(cmd.Context(), name); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.AddCommand(create, ls, rm)
	cmd.AddCommand(networkAttachCommands()...)
	return cmd
}

func (g *globals) networks() (*netplug.Networks, error) {
	return netplug.Open(&netplug.Options{Logger: g.logger()})
}
