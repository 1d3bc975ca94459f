package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
)

func newPsCommand(g *globals) *cobra.Command {
	var (
		all, quiet, noTrunc bool
		format              string
		filters             []string
	)
	cmd := &cobra.Command{
		Use:   "ps [-a] [-q] [--filter KEY=VALUE] [--format FORMAT]",
		Short: "List sandboxes: running ones, and with -a exited ones too",
		Long: `List sandboxes: the running ones (detached or not), and with -a the
detached ones that have exited, until berth rm removes them.

A sandbox whose owner died, or whose record is damaged, is always listed,
with what is wrong, until berth gc reclaims it.

--filter (repeatable; different keys must all match, one key given twice
matches either value):
  label=KEY or label=KEY=VALUE   a label set with berth run -l
  name=NAME                      a name, exactly
  id=PREFIX                      an ID prefix
  status=STATUS                  created, running, restarting, exited or dead

--format is a Go template over the fields .ID, .Image, .Command,
.CreatedAt, .RunningFor, .Status, .State, .Ports, .Names, .Labels,
.Networks, .SandboxID and the method .Label KEY; "table TEMPLATE" prints
it as a table with headers, "json" one JSON object per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			match, err := parseFilters(filters)
			statusFiltered := slices.ContainsFunc(filters, func(f string) bool { return strings.HasPrefix(f, "status=") })
			if err != nil {
				return err
			}
			tmpl, table, err := psTemplate(format, quiet)
			if err != nil {
				return err
			}
			entries, err := g.listAll(cmd.Context())
			if err != nil {
				return err
			}
			var rows []*psRow
			for _, l := range entries {
				// Without -a, what has ended is left out, unless a
				// status filter asks for it; a dead or damaged entry
				// is always shown, so that it is not overlooked.
				if !all && l.State == "exited" && !statusFiltered {
					continue
				}
				if !match(l) {
					continue
				}
				rows = append(rows, g.psRow(cmd.Context(), l, noTrunc))
			}
			return printRows(cmd.OutOrStdout(), rows, psHeader, tmpl, table, format == "json")
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show exited sandboxes too")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print the IDs only")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not shorten IDs and commands")
	cmd.Flags().StringVar(&format, "format", "", `a Go template, "table TEMPLATE" or "json"`)
	cmd.Flags().StringArrayVarP(&filters, "filter", "f", nil, "show only what matches KEY=VALUE (label, name, id, status)")
	return cmd
}

// defaultPsTable is what ps prints without --format.
const defaultPsTable = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"

// psTemplate parses --format: a template, "table TEMPLATE", or "json".
func psTemplate(format string, quiet bool) (tmpl *template.Template, table bool, err error) {
	if quiet && format == "" {
		format = "{{.ID}}"
	}
	return parseFormat(format, defaultPsTable)
}

// parseFormat parses a listing's --format: a template, "table
// TEMPLATE", or "json" (a nil template); "" and "table" are defaultTable.
func parseFormat(format, defaultTable string) (tmpl *template.Template, table bool, err error) {
	switch format {
	case "", "table":
		format = defaultTable
	case "json":
		return nil, false, nil
	}
	if rest, ok := strings.CutPrefix(format, "table "); ok {
		format, table = rest, true
	}
	// As Docker does, `\t` typed on a command line is a tab.
	format = strings.ReplaceAll(format, `\t`, "\t")
	format = strings.ReplaceAll(format, `\n`, "\n")
	tmpl, err = template.New("format").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
		"join":  strings.Join,
		"upper": strings.ToUpper,
		"lower": strings.ToLower,
	}).Parse(format)
	if err != nil {
		return nil, false, invalidFlag("--format: %w", err)
	}
	return tmpl, table, nil
}

// printRows writes rows with tmpl, as a table with a header line (tmpl
// run over header) if table, or as JSON lines.
func printRows[R any](w io.Writer, rows []R, header R, tmpl *template.Template, table, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	out := w
	var tw *tabwriter.Writer
	if table {
		tw = tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
		out = tw
		var head bytes.Buffer
		if err := tmpl.Execute(&head, header); err != nil {
			return invalidFlag("--format: %w", err)
		}
		fmt.Fprintln(out, strings.TrimRight(head.String(), "\n"))
	}
	for _, r := range rows {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, r); err != nil {
			return invalidFlag("--format: %w", err)
		}
		fmt.Fprintln(out, strings.TrimRight(b.String(), "\n"))
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// A psRow is one line of ps, as --format sees it. Every string in it
// comes out of cell: what an image or a caller chose (a name, a label,
// a command) cannot break a line or send a terminal an escape sequence.
type psRow struct {
	ID         string
	SandboxID  string `json:",omitempty"`
	Image      string
	Command    string
	CreatedAt  string
	RunningFor string
	Status     string
	State      string
	Ports      string
	Names      string
	Networks   string
	Labels     string
	labels     map[string]string
}

// Label returns the value of the label key, for --format '{{.Label "k"}}'.
func (r *psRow) Label(key string) string { return cell(r.labels[key], 256) }

// psHeader is the header line of a table, the template run over it.
var psHeader = &psRow{
	ID: "ID", SandboxID: "SANDBOX ID", Image: "IMAGE", Command: "COMMAND", CreatedAt: "CREATED AT",
	RunningFor: "CREATED", Status: "STATUS", State: "STATE", Ports: "PORTS", Names: "NAMES",
	Networks: "NETWORKS", Labels: "LABELS",
}

func (g *globals) psRow(ctx context.Context, l *listed, noTrunc bool) *psRow {
	short := func(id string) string {
		if noTrunc {
			return id
		}
		return id[:min(12, len(id))]
	}
	r := &psRow{
		ID: short(l.ID), SandboxID: short(l.SandboxID), State: l.State, Names: cell(l.Name, 128), labels: l.Labels,
		Image: cell(l.Image, 60), Status: psStatus(l), Networks: "",
	}
	command := strings.Join(l.Command, " ")
	if noTrunc {
		r.Command = cell(command, 4096)
	} else {
		r.Command = cell(truncate(command, 30), 64)
	}
	if l.Problem != "" {
		r.Image, r.Command = "?", "?"
	}
	if !l.Created.IsZero() {
		r.CreatedAt = l.Created.Local().Format("2006-01-02 15:04:05 -0700 MST")
		r.RunningFor = humanDuration(time.Since(l.Created)) + " ago"
	}
	var ports, nets []string
	var atts []*netplug.Attachment
	if l.State == "running" {
		atts, _ = g.attachments(ctx, l.SandboxID)
		for _, a := range atts {
			nets = append(nets, cell(a.Network, 64))
		}
	}
	for _, p := range publishedPorts(l, atts) {
		ports = append(ports, formatPort(p))
	}
	r.Ports, r.Networks = strings.Join(ports, ", "), strings.Join(nets, ",")
	var labels []string
	for _, k := range slices.Sorted(maps.Keys(l.Labels)) {
		labels = append(labels, k+"="+l.Labels[k])
	}
	r.Labels = cell(strings.Join(labels, ","), 1024)
	return r
}

// psStatus is Docker's STATUS: "Up 3 minutes", "Exited (0) 2 seconds
// ago", "Restarting (1) 1 second ago", "Created"; and berth's own for a
// sandbox that a dead owner left, or whose record is damaged.
func psStatus(l *listed) string {
	switch {
	case l.Problem != "" && l.State == "dead":
		return "dead, damaged record (berth gc reclaims it): " + cell(l.Problem, 80)
	case l.Problem != "":
		return "starting, or damaged record (owner alive): " + cell(l.Problem, 80)
	}
	switch l.State {
	case "running":
		return "Up " + humanDuration(time.Since(l.Started))
	case "restarting":
		return fmt.Sprintf("Restarting (%d) %s ago", l.ExitCode, humanDuration(time.Since(l.Finished)))
	case "exited":
		if l.Finished.IsZero() {
			return "Exited, rootfs kept by its owner"
		}
		return fmt.Sprintf("Exited (%d) %s ago", l.ExitCode, humanDuration(time.Since(l.Finished)))
	case "created":
		return "Created"
	}
	return "Dead (berth gc reclaims it)"
}

// humanDuration says d as Docker's ps does.
func humanDuration(d time.Duration) string {
	s := int(d.Seconds())
	switch h := int(d.Hours()); {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return strconv.Itoa(s) + " seconds"
	case int(d.Minutes()) == 1:
		return "About a minute"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + " minutes"
	case h == 1:
		return "About an hour"
	case h < 48:
		return strconv.Itoa(h) + " hours"
	case h < 24*7*2:
		return strconv.Itoa(h/24) + " days"
	case h < 24*30*2:
		return strconv.Itoa(h/24/7) + " weeks"
	case h < 24*365*2:
		return strconv.Itoa(h/24/30) + " months"
	default:
		return strconv.Itoa(h/24/365) + " years"
	}
}

// parseFilters reads ps's --filter options into a predicate.
func parseFilters(filters []string) (func(*listed) bool, error) {
	byKey := map[string][]string{}
	for _, f := range filters {
		key, value, ok := strings.Cut(f, "=")
		if !ok {
			return nil, invalidFlag("--filter %s: want KEY=VALUE", clip.Quote(f))
		}
		switch key {
		case "label", "name", "id":
		case "status":
			switch value {
			case "created", "running", "restarting", "exited", "dead":
			default:
				return nil, invalidFlag("--filter status=%s: want created, running, restarting, exited or dead", clip.String(value))
			}
		default:
			return nil, invalidFlag("--filter %s: unknown key %s (want label, name, id or status)", clip.Quote(f), clip.Quote(key))
		}
		byKey[key] = append(byKey[key], value)
	}
	return func(l *listed) bool {
		// Every label filter must match, as Docker's do.
		for _, want := range byKey["label"] {
			k, v, hasValue := strings.Cut(want, "=")
			got, ok := l.Labels[k]
			if !ok || hasValue && got != v {
				return false
			}
		}
		anyOf := func(key string, ok func(string) bool) bool {
			vs := byKey[key]
			return len(vs) == 0 || slices.ContainsFunc(vs, ok)
		}
		return anyOf("name", func(v string) bool { return l.Name == v }) &&
			anyOf("id", func(v string) bool {
				return strings.HasPrefix(l.ID, v) || l.SandboxID != "" && strings.HasPrefix(l.SandboxID, v)
			}) &&
			anyOf("status", func(v string) bool { return l.State == v })
	}, nil
}

// truncate cuts s to n runes, with an ellipsis if it was longer, as
// Docker's ps does its commands.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
