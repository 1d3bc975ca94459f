package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/bench"
)

// Results is everything one run measured; results.json is it verbatim.
type Results struct {
	Mode            string       `json:"mode"`
	Started         time.Time    `json:"started"`
	DurationSeconds float64      `json:"duration_seconds"`
	Machine         Machine      `json:"machine"`
	Startup         []Latency    `json:"startup"`
	Network         []Latency    `json:"network"`
	Memory          []Memory     `json:"memory"`
	Detached        []Detached   `json:"detached,omitempty"`
	Density         []Density    `json:"density"`
	Throughput      []Throughput `json:"throughput"`
	Layerfs         Layerfs      `json:"layerfs"`
	Plugins         *Plugins     `json:"plugins,omitempty"`
	PluginsOnly     bool         `json:"plugins_only,omitempty"`  // -plugins only: scenarios 1-6 did not run
	DetachedOnly    bool         `json:"detached_only,omitempty"` // -detached only: only scenario 3b ran
	Notes           []string     `json:"notes"`
}

func (r *Results) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(dir, "startup-cdf.svg"), r.startupChart()); err != nil {
		return err
	}
	if err := writeChart(filepath.Join(dir, "memory.svg"), r.memoryChart()); err != nil {
		return err
	}
	fmt.Print(md)
	return nil
}

// mergeDetached returns the results already in dir with section 3b
// replaced by r's, so that a -detached only run lands next to the
// figures it is compared with; or r itself if dir holds no complete run.
func (r *Results) mergeDetached(dir string) *Results {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return r
	}
	var prev Results
	if err := json.Unmarshal(b, &prev); err != nil || prev.PluginsOnly || prev.DetachedOnly {
		return r
	}
	prev.Detached = r.Detached
	prev.Notes = slices.DeleteFunc(prev.Notes, func(n string) bool { return strings.HasPrefix(n, detachedNotePrefix) })
	for _, n := range r.Notes {
		if strings.HasPrefix(n, detachedNotePrefix) {
			prev.Notes = append(prev.Notes, n)
		}
	}
	prev.Notes = append(prev.Notes, fmt.Sprintf("%ssection 3b comes from a later run (-detached only, %s mode, %s, %.0f s); the other sections from the run above",
		detachedNotePrefix, r.Mode, r.Started.Format(time.RFC3339), r.DurationSeconds))
	return &prev
}

func writeChart(path string, c *bench.Chart) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := c.WriteSVG(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

func (r *Results) startupChart() *bench.Chart {
	c := &bench.Chart{Title: "start→exit of true: cumulative distribution", XLabel: "milliseconds", YLabel: "fraction of runs"}
	for _, l := range r.Startup {
		xs, ys := bench.CDF(l.Samples)
		c.Series = append(c.Series, bench.Series{Name: l.Tool, X: xs, Y: ys})
	}
	return c
}

func (r *Results) memoryChart() *bench.Chart {
	c := &bench.Chart{Title: "host memory per idle sandbox (PSS of host-side processes + kmem)", XLabel: "idle sandboxes (log scale)", YLabel: "KiB per sandbox", LogX: true}
	var tools []string
	for _, m := range r.Memory {
		if !slices.Contains(tools, m.Tool) {
			tools = append(tools, m.Tool)
		}
	}
	for _, t := range tools {
		s := bench.Series{Name: t}
		for _, m := range r.Memory {
			if m.Tool == t && m.Error == "" {
				s.X = append(s.X, float64(m.N))
				s.Y = append(s.Y, m.PSS+max(m.KernelKB, 0))
			}
		}
		c.Series = append(c.Series, s)
	}
	s := bench.Series{Name: "berth run -d (supervisor + PID 1)"}
	for _, d := range r.Detached {
		if d.Error == "" {
			s.X = append(s.X, float64(d.N))
			s.Y = append(s.Y, d.Total())
		}
	}
	if len(s.X) > 0 {
		c.Series = append(c.Series, s)
	}
	return c
}

// cell shortens an error for a table cell: its first line, with pipes
// escaped.
func cell(s string) string {
	s = firstLine(s)
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

func (r *Results) markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# berth-bench results (%s mode)\n\n", r.Mode)
	fmt.Fprintf(&b, "%s; kernel %s; %s, %d cores; %d MiB; cgroups %s; run took %.0f s.\n\n",
		r.Started.Format(time.RFC3339), m.Kernel, m.CPU, m.Cores, m.MemoryKiB/1024, m.CgroupMode, r.DurationSeconds)
	var names []string
	for k := range m.Tools {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&b, "- %s: %s\n", k, m.Tools[k])
	}

	latency := func(title string, rows []Latency) {
		fmt.Fprintf(&b, "\n## %s\n\n| tool | runs | p50 ms | p90 ms | p99 ms | max ms | result |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |\n", title)
		for _, l := range rows {
			result := "ok"
			if l.Error != "" {
				result = "FAILED: " + cell(l.Error)
			}
			if l.N == 0 {
				fmt.Fprintf(&b, "| %s | 0 | – | – | – | – | %s |\n", l.Tool, result)
				continue
			}
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f | %.1f | %s |\n", l.Tool, l.N, l.P50, l.P90, l.P99, l.Max, result)
		}
	}
	if r.PluginsOnly {
		r.pluginsOnlyMarkdown(&b)
		return b.String()
	}
	if r.DetachedOnly {
		r.detachedMarkdown(&b)
		r.notesMarkdown(&b)
		return b.String()
	}
	latency("1. start→exit of `true`", r.Startup)
	latency("2. start→exit of `true` with a bridge network", r.Network)

	fmt.Fprintf(&b, "\n## 3. host memory per idle sandbox (`sleep 1000`)\n\nPSS and RSS are of the processes the tool keeps on the host besides the workload; kmem is the kernel memory charged to the sandbox's own memory cgroup (v1 `memory.kmem.usage_in_bytes`, or the `kernel` line of cgroup2's `memory.stat`), – where it has none.\n\n")
	b.WriteString("| tool | N | host procs / sandbox | PSS KiB / sandbox | RSS KiB / sandbox | kmem KiB / sandbox | result |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, x := range r.Memory {
		if x.Error != "" {
			fmt.Fprintf(&b, "| %s | %d | – | – | – | – | FAILED: %s |\n", x.Tool, x.N, cell(x.Error))
			continue
		}
		kmem := "–"
		if x.KernelKB >= 0 {
			kmem = fmt.Sprintf("%.0f", x.KernelKB)
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.0f | %.0f | %s | ok |\n", x.Tool, x.N, x.Procs, x.PSS, x.RSS, kmem)
	}
	r.detachedMarkdown(&b)

	b.WriteString("\n## 4. density: idle sandboxes running at once\n\n| tool | cap | reached | seconds to start all | seconds to close all | stopped by |\n| --- | ---: | ---: | ---: | ---: | --- |\n")
	for _, d := range r.Density {
		stop := "the cap"
		if d.Error != "" {
			stop = cell(d.Error)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %s |\n", d.Tool, d.Cap, d.Reached, d.Seconds, d.StopSeconds, stop)
	}

	b.WriteString("\n## 5. throughput: start→exit of `true` per second\n\n| tool | workers | runs | per second | result |\n| --- | ---: | ---: | ---: | --- |\n")
	for _, t := range r.Throughput {
		result := "ok"
		if t.Error != "" {
			result = "FAILED: " + cell(t.Error)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %s |\n", t.Tool, t.Workers, t.Runs, t.PerSec, result)
	}

	l := r.Layerfs
	b.WriteString("\n## 6. layerfs\n\n| operation | runs | p50 ms | p99 / max ms |\n| --- | ---: | ---: | ---: |\n")
	fmt.Fprintf(&b, "| overlay Prepare+Release | %d | %.2f | %.2f (p99) |\n", l.PrepareRuns, l.PrepareP50, l.PrepareP99)
	fmt.Fprintf(&b, "| import of the Alpine tarball (%d KiB) into an empty store | %d | %.1f | %.1f (max) |\n", l.ImportedBytes/1024, l.Imports, l.ImportP50, l.ImportMax)

	if r.Plugins != nil {
		r.Plugins.markdown(&b)
	}

	r.notesMarkdown(&b)
	return b.String()
}

func (r *Results) notesMarkdown(b *strings.Builder) {
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
	}
}

// detachedMarkdown is section 3b, next to section 3's rows.
func (r *Results) detachedMarkdown(b *strings.Builder) {
	if len(r.Detached) == 0 {
		return
	}
	b.WriteString("\n## 3b. host memory per idle detached sandbox (`berth run -d alpine sleep 1000`)\n\n" +
		"A detached sandbox keeps two processes on the host: its supervisor (which holds its output and exit status) and its PID 1. " +
		"PSS and RSS are per sandbox; total is both PSS plus kmem; private is what the two processes have to themselves (smaps Private_Clean + Private_Dirty), the floor their PSS nears as N grows. Start is N `berth run -d` one after another; remove is one `berth rm -f` of all N, until the last reaper has exited.\n\n")
	b.WriteString("| N | supervisor PSS KiB | supervisor RSS KiB | PID 1 PSS KiB | PID 1 RSS KiB | private KiB | kmem KiB | total KiB | start all s | run -d p50 ms | p99 ms | rm -f all s | result |\n" +
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, d := range r.Detached {
		if d.Error != "" && d.SupervisorRSS == 0 {
			fmt.Fprintf(b, "| %d | – | – | – | – | – | – | – | – | – | – | – | FAILED: %s |\n", d.N, cell(d.Error))
			continue
		}
		kmem := "–"
		if d.KernelKB >= 0 {
			kmem = fmt.Sprintf("%.0f", d.KernelKB)
		}
		result := "ok"
		if d.Error != "" {
			result = "FAILED: " + cell(d.Error)
		}
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %s |\n", d.N, d.SupervisorPSS, d.SupervisorRSS,
			d.InitPSS, d.InitRSS, d.Private, kmem, d.Total(), d.StartSeconds, d.StartP50, d.StartP99, d.RemoveSeconds, result)
	}
}
