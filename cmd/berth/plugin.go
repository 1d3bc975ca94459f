package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	"github.com/berth-dev/berth/plugin"
	"github.com/berth-dev/berth/sandbox"
)

// pluginFlags are `berth run`'s plugin options.
type pluginFlags struct {
	storage, network         string
	storageOpts, networkOpts []string
}

func (f *pluginFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.storage, "storage-plugin", "", "make the root filesystem with this storage plugin: a NAME in the plugins directory ($BERTH_PLUGIN_DIR or "+plugin.DefaultDir+") or a PATH")
	cmd.Flags().StringVar(&f.network, "network-plugin", "", "connect the sandbox with this network plugin: a NAME in the plugins directory or a PATH (instead of --net)")
	cmd.Flags().StringArrayVar(&f.storageOpts, "storage-opt", nil, "a KEY=VALUE setting for the storage plugin (repeatable)")
	cmd.Flags().StringArrayVar(&f.networkOpts, "network-opt", nil, "a KEY=VALUE setting for the network plugin (repeatable)")
}

// open starts the plugins the flags name and puts them in opts, whose
// Storage is the store by then (images still come from it). The returned
// function stops them; it is never nil.
func (f *pluginFlags) open(ctx context.Context, g *globals, cmd *cobra.Command, opts *sandbox.Options) (closeAll func(), err error) {
	var closers []func() error
	closeAll = func() {
		for _, c := range closers {
			c()
		}
	}
	storageSettings, err := pluginSettings("--storage-opt", f.storageOpts)
	if err != nil {
		return closeAll, err
	}
	networkSettings, err := pluginSettings("--network-opt", f.networkOpts)
	if err != nil {
		return closeAll, err
	}
	switch {
	case f.storage == "" && len(storageSettings) > 0:
		return closeAll, invalidFlag("--storage-opt needs --storage-plugin")
	case f.network == "" && len(networkSettings) > 0:
		return closeAll, invalidFlag("--network-opt needs --network-plugin")
	case f.network != "" && (cmd.Flags().Changed("net") || opts.JoinNetwork != ""):
		return closeAll, invalidFlag("--network-plugin and --net: give one")
	}
	if f.storage != "" {
		path, err := plugin.Find(f.storage)
		if err != nil {
			return closeAll, usageError{fmt.Errorf("--storage-plugin: %w", err)}
		}
		store, _ := opts.Storage.(*layerfs.Store)
		s, err := plugin.OpenStorage(ctx, path, &plugin.Options{Logger: g.logger(), Store: store, Settings: storageSettings})
		if err != nil {
			return closeAll, fmt.Errorf("--storage-plugin %s: %w", clip.String(f.storage), err)
		}
		closers = append(closers, s.Close)
		opts.Storage = s
	}
	if f.network != "" {
		path, err := plugin.Find(f.network)
		if err != nil {
			return closeAll, usageError{fmt.Errorf("--network-plugin: %w", err)}
		}
		n, err := plugin.OpenNetwork(ctx, path, &plugin.Options{Logger: g.logger(), Settings: networkSettings})
		if err != nil {
			return closeAll, fmt.Errorf("--network-plugin %s: %w", clip.String(f.network), err)
		}
		closers = append(closers, n.Close)
		opts.Network = n
	}
	return closeAll, nil
}

// pluginSettings reads a plugin's KEY=VALUE settings; a key given twice
// is a mistake, not an override.
func pluginSettings(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, invalidFlag("%s %s: want KEY=VALUE", flag, clip.Quote(kv))
		}
		if _, dup := out[k]; dup {
			return nil, invalidFlag("%s: %s given twice", flag, clip.Quote(k))
		}
		out[k] = v
	}
	return out, nil
}

// pluginBackends reopens, for berth gc, the plugins dead sandboxes were
// made with. A plugin's path comes from the sandbox's record: it is
// checked again as one given on the command line is (plugin.Find), and
// one that is gone or not trusted leaves the sandbox for a later gc.
type pluginBackends struct {
	g     *globals
	store *layerfs.Store
}

func (b pluginBackends) OpenStorage(ctx context.Context, locator string) (sandbox.Storage, error) {
	path, err := plugin.Find(locator)
	if err != nil {
		return nil, err
	}
	return plugin.OpenStorage(ctx, path, &plugin.Options{Logger: b.g.logger(), Store: b.store})
}

func (b pluginBackends) OpenNetwork(ctx context.Context, locator string) (sandbox.Network, error) {
	path, err := plugin.Find(locator)
	if err != nil {
		return nil, err
	}
	return plugin.OpenNetwork(ctx, path, &plugin.Options{Logger: b.g.logger()})
}

func newPluginCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "plugin", Short: "Manage storage and network plugins"}
	cmd.AddCommand(newPluginListCommand(g))
	return cmd
}

func newPluginListCommand(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the plugins in the plugins directory, starting each to ask what it is",
		Long: `List the plugins in the plugins directory ($BERTH_PLUGIN_DIR, or
` + plugin.DefaultDir + `), starting each to ask what it is. A program that
is not a plugin, fails, or could be replaced by someone other than root is
listed with what is wrong with it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			entries, err := plugin.List(cmd.Context(), dir, &plugin.Options{Logger: g.logger()})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tPROTOCOL\tVERSION\tCAPABILITIES")
			for _, e := range entries {
				fmt.Fprintln(tw, pluginLine(e))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the plugins directory (default $BERTH_PLUGIN_DIR or "+plugin.DefaultDir+")")
	return cmd
}

// pluginLine is the line of `berth plugin ls` for e. What a plugin says
// of itself is its author's text, as much as a file name is whoever put
// it there: each is cut short, and stripped of what would break the
// columns or reach the terminal as control sequences.
func pluginLine(e plugin.Entry) string {
	name := cell(e.Name, 40)
	if e.Err != nil {
		return fmt.Sprintf("%s\t?\t?\t?\terror: %s", name, cell(e.Err.Error(), 200))
	}
	i := e.Info
	caps := strings.Join(i.Capabilities, ",")
	if caps == "" {
		caps = "-"
	}
	version := i.Version
	if version == "" {
		version = "-"
	}
	if i.Name != "" && i.Name != e.Name {
		name += " (" + cell(i.Name, 40) + ")"
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", name, cell(i.Kind, 16), strconv.Itoa(i.Protocol), cell(version, 40), cell(caps, 80))
}

// cell makes s safe for one column of a table: no tabs or line breaks,
// control characters escaped, at most n bytes and its length beyond.
func cell(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	return clip.Text(clip.Cut(s, n))
}
