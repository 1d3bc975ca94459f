package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

// statsInterval is how often stats refreshes, and the span its CPU %
// is measured over, as Docker's.
const statsInterval = time.Second

func newStatsCommand(g *globals) *cobra.Command {
	var (
		noStream bool
		format   string
	)
	cmd := &cobra.Command{
		Use:   "stats [--no-stream] [--format TEMPLATE] [NAME...]",
		Short: "Show running sandboxes' use of CPU, memory, network and processes",
		Long: `Show running sandboxes' use of resources, refreshed every second until
interrupted, or once with --no-stream. Without NAMEs, every running
sandbox, those started meanwhile included.

CPU % is of one CPU (200% is two CPUs' worth) over the last second; MEM
USAGE / LIMIT is the cgroup's memory, page cache included, and its limit
(the host's memory if it has none); NET I/O is what its network
namespace received and sent, loopback left out; PIDS counts processes
and threads.

--format is a Go template over the fields .ID, .Container (the name, or
else the ID), .Name, .CPUPerc, .MemUsage, .MemPerc, .NetIO and .PIDs;
"table TEMPLATE" prints it as a table with headers, "json" one JSON
object per line.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tmpl, table, err := parseFormat(format, defaultStatsTable)
			if err != nil {
				return err
			}
			m := &statsMonitor{g: g, names: args, handles: map[string]*statsHandle{},
				tmpl: tmpl, table: table, asJSON: format == "json"}
			defer m.close()
			if err := m.sample(ctx); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(statsInterval):
				}
				if err := m.sample(ctx); err != nil {
					return err
				}
				if !noStream {
					// Home and clear, as Docker does, then the table.
					io.WriteString(out, "\x1b[H\x1b[2J")
				}
				if err := m.print(out); err != nil {
					return err
				}
				if noStream {
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "print the figures once and exit")
	cmd.Flags().StringVar(&format, "format", "", `a Go template, "table TEMPLATE" or "json"`)
	return cmd
}

// defaultStatsTable is what stats prints without --format.
const defaultStatsTable = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.PIDs}}"

// A statsRow is one line of stats, as --format sees it. Its strings come
// out of cell, as ps's do.
type statsRow struct {
	ID, Container, Name string
	CPUPerc, MemUsage   string
	MemPerc, NetIO      string
	PIDs                string
}

// statsHeader is the header line of a table, the template run over it.
var statsHeader = statsRow{ID: "ID", Container: "CONTAINER", Name: "NAME", CPUPerc: "CPU %",
	MemUsage: "MEM USAGE / LIMIT", MemPerc: "MEM %", NetIO: "NET I/O", PIDs: "PIDS"}

// statsMonitor keeps a handle on each sandbox it shows, so that a refresh
// costs a few reads from its cgroup, not an Open.
type statsMonitor struct {
	g       *globals
	names   []string
	handles map[string]*statsHandle // by sandbox ID
	order   []string
	// How print prints: --format's template, or JSON lines.
	tmpl          *template.Template
	table, asJSON bool
}

type statsHandle struct {
	l          *listed
	sb         *sandbox.Sandbox
	limit      uint64
	prev, last cgroup.Stats
	prevAt     time.Time
	lastAt     time.Time
	rx, tx     uint64
	gone       bool
}

// sample reads every shown sandbox's figures once. Named sandboxes that
// cannot be found are an error the first time; a sandbox that ends is
// shown as gone, once, and then, unless it was named, no longer: a
// container restarted again and again is not a new row each time.
func (m *statsMonitor) sample(ctx context.Context) error {
	var want []*listed
	if len(m.names) == 0 {
		m.order = slices.DeleteFunc(m.order, func(id string) bool {
			if m.handles[id].gone {
				delete(m.handles, id)
				return true
			}
			return false
		})
		all, err := m.g.listAll(ctx)
		if err != nil {
			return err
		}
		for _, l := range all {
			if l.State == "running" {
				want = append(want, l)
			}
		}
	} else if len(m.handles) == 0 {
		for _, name := range m.names {
			l, err := m.g.find(ctx, name)
			if err != nil {
				return err
			}
			if l.State != "running" {
				return fmt.Errorf("%s: %w", clip.Quote(name), sandbox.ErrNotRunning)
			}
			want = append(want, l)
		}
	}
	for _, l := range want {
		if _, ok := m.handles[l.SandboxID]; ok {
			continue
		}
		opts, err := m.g.sandboxOptions()
		if err != nil {
			return err
		}
		sb, err := sandbox.Open(ctx, l.SandboxID, opts)
		if err != nil {
			if len(m.names) > 0 {
				return err
			}
			continue // ended meanwhile
		}
		h := &statsHandle{l: l, sb: sb, limit: uint64(limitsOf(l.Sandbox).Memory)}
		if h.limit == 0 {
			var si unix.Sysinfo_t
			if unix.Sysinfo(&si) == nil {
				h.limit = uint64(si.Totalram) * uint64(si.Unit)
			}
		}
		m.handles[l.SandboxID] = h
		m.order = append(m.order, l.SandboxID)
	}
	for _, id := range m.order {
		h := m.handles[id]
		if h.gone {
			continue
		}
		st, err := h.sb.Stats()
		if err != nil {
			h.gone = true
			h.sb.Close()
			continue
		}
		h.prev, h.prevAt = h.last, h.lastAt
		h.last, h.lastAt = st, time.Now()
		if h.l.Sandbox != nil {
			h.rx, h.tx = netBytes(h.l.Sandbox.Init.PID)
		}
	}
	return nil
}

func (m *statsMonitor) print(w io.Writer) error {
	rows := make([]statsRow, 0, len(m.order))
	for _, id := range m.order {
		h := m.handles[id]
		r := statsRow{ID: h.l.ID[:12], Name: cell(h.l.Name, 64)}
		r.Container = cmp.Or(r.Name, r.ID)
		if r.Name == "" {
			r.Name = "--"
		}
		if h.gone {
			r.CPUPerc, r.MemUsage, r.MemPerc, r.NetIO, r.PIDs = "--", "-- / --", "--", "--", "--"
			rows = append(rows, r)
			continue
		}
		cpu := 0.0
		if !h.prevAt.IsZero() {
			if wall := h.lastAt.Sub(h.prevAt); wall > 0 {
				cpu = float64(h.last.CPU-h.prev.CPU) / float64(wall) * 100
			}
		}
		mem := 0.0
		if h.limit > 0 {
			mem = float64(h.last.Memory) / float64(h.limit) * 100
		}
		r.CPUPerc = fmt.Sprintf("%.2f%%", cpu)
		r.MemUsage = humanSize(int64(h.last.Memory)) + " / " + humanSize(int64(h.limit))
		r.MemPerc = fmt.Sprintf("%.2f%%", mem)
		r.NetIO = decimalSize(h.rx) + " / " + decimalSize(h.tx)
		r.PIDs = strconv.FormatUint(h.last.Pids, 10)
		rows = append(rows, r)
	}
	return printRows(w, rows, statsHeader, m.tmpl, m.table, m.asJSON)
}

func (m *statsMonitor) close() {
	for _, h := range m.handles {
		h.sb.Close() // again, for one gone: a no-op
	}
}

// netBytes returns what the network namespace of process pid received
// and sent, loopback left out, from its /proc/PID/net/dev.
func netBytes(pid int) (rx, tx uint64) {
	dir, err := os.OpenRoot("/proc/" + strconv.Itoa(pid))
	if err != nil {
		return 0, 0
	}
	defer dir.Close()
	b, err := readAtMost(dir, "net/dev", 64<<10)
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			continue
		}
		r, _ := strconv.ParseUint(f[0], 10, 64)
		t, _ := strconv.ParseUint(f[8], 10, 64)
		rx, tx = rx+r, tx+t
	}
	return rx, tx
}

// decimalSize prints n bytes in powers of 1000, as Docker's NET I/O does.
func decimalSize(n uint64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3g%cB", float64(n)/float64(div), "kMGTPE"[exp])
}
