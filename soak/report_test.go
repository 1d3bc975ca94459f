//go:build soak

package soak

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// stats are the soak's figures.
type stats struct {
	Ops       map[string]*opStats // by kind of operation
	InitKills int                 // sandboxes' inits killed
	Damage    map[string]int      // records damaged, by how
	GCPasses  int                 // final berth gc passes
	Converged bool                // the last of them left nothing
	Runs      time.Duration       // the operations' wall time
	Wall      time.Duration       // all of it, collection and audit included
}

// opStats count how one kind of operation ended.
type opStats struct {
	N, OK, Killed, Hung int
	Failed              map[int]int // by exit code
}

func (st *stats) op(name string) *opStats {
	if st.Ops == nil {
		st.Ops = map[string]*opStats{}
	}
	o := st.Ops[name]
	if o == nil {
		o = &opStats{Failed: map[int]int{}}
		st.Ops[name] = o
	}
	return o
}

func (o *opStats) add(out outcome) {
	o.N++
	switch {
	case out.hung:
		o.Hung++
	case out.killed:
		o.Killed++
	case out.code == 0:
		o.OK++
	default:
		o.Failed[out.code]++
	}
}

func (st *stats) damage(kind string) {
	if st.Damage == nil {
		st.Damage = map[string]int{}
	}
	st.Damage[kind]++
}

func (st *stats) damages() int {
	n := 0
	for _, v := range st.Damage {
		n += v
	}
	return n
}

// report logs the soak's figures and what it left.
func (s *soak) report(left []string) {
	var b strings.Builder
	st := &s.stats
	total := 0
	for _, o := range st.Ops {
		total += o.N
	}
	fmt.Fprintf(&b, "soak figures\n")
	fmt.Fprintf(&b, "  operations      %d in %s (%.1f/s)\n", total, st.Runs.Round(time.Second), float64(total)/st.Runs.Seconds())
	for _, name := range slices.Sorted(maps.Keys(st.Ops)) {
		o := st.Ops[name]
		var failed []string
		for _, code := range slices.Sorted(maps.Keys(o.Failed)) {
			failed = append(failed, fmt.Sprintf("exit %d: %d", code, o.Failed[code]))
		}
		fmt.Fprintf(&b, "    %-14s %5d: %d ok, %d killed, %d hung, failed {%s}\n", name, o.N, o.OK, o.Killed, o.Hung, strings.Join(failed, ", "))
	}
	fmt.Fprintf(&b, "  kills           %d of berth commands, %d of sandboxes' inits\n", s.killedCLIs(), st.InitKills)
	fmt.Fprintf(&b, "  damages         %d\n", st.damages())
	for _, k := range slices.Sorted(maps.Keys(st.Damage)) {
		fmt.Fprintf(&b, "    %-26s %d\n", k, st.Damage[k])
	}
	fmt.Fprintf(&b, "  gc passes       %d (converged: %v)\n", st.GCPasses, st.Converged)
	fmt.Fprintf(&b, "  sandboxes seen  %d\n", len(s.seen))
	fmt.Fprintf(&b, "  wall time       %s\n", st.Wall.Round(time.Second))
	fmt.Fprintf(&b, "  left behind     %d\n", len(left))
	for _, l := range left {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	if len(s.sample) > 0 {
		fmt.Fprintf(&b, "  failures, by first line of stderr (expected under chaos; for reading)\n")
		keys := slices.SortedFunc(maps.Keys(s.sample), func(a, b string) int { return s.sample[b] - s.sample[a] })
		for _, k := range keys {
			fmt.Fprintf(&b, "    %5d  %s\n", s.sample[k], k)
		}
	}
	s.t.Log(b.String())
}

// killedCLIs counts the berth commands the soak killed, from the
// operations' outcomes.
func (s *soak) killedCLIs() int {
	n := 0
	for _, o := range s.stats.Ops {
		n += o.Killed
	}
	return n
}

// hung counts the berth commands that outlived opTimeout.
func (s *soak) hung() int {
	n := 0
	for _, o := range s.stats.Ops {
		n += o.Hung
	}
	return n
}
