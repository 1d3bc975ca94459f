package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
)

func newTopCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top NAME [-o FIELD,...]",
		Short: "List the processes running in a sandbox",
		Long: `List the processes running in a sandbox, from its cgroup and the host's
/proc (no program is run, in the sandbox or on the host). PIDs are the
host's; NSPID is the PID the sandbox sees.

The columns default to ps -ef's: UID PID PPID C STIME TTY TIME CMD.
-o picks others, comma-separated: ` + strings.Join(topFieldNames(), ", ") + `.
-ef and aux are accepted for the default columns and ps aux's.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, psArgs := args[0], args[1:]
			fields, err := topFields(psArgs)
			if err != nil {
				return err
			}
			l, sb, err := g.findRunning(cmd.Context(), name)
			if err != nil {
				return err
			}
			pids, err := sb.Pids()
			if err != nil {
				return err
			}
			procs := make([]*procInfo, 0, len(pids))
			for _, pid := range pids {
				p, err := readProc(pid, l.SandboxID)
				if err != nil {
					continue // gone meanwhile, or no longer the sandbox's
				}
				procs = append(procs, p)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			var header []string
			for _, f := range fields {
				header = append(header, topColumns[f].header)
			}
			fmt.Fprintln(tw, strings.Join(header, "\t"))
			for _, p := range procs {
				var row []string
				for _, f := range fields {
					row = append(row, cell(topColumns[f].value(p), 4096))
				}
				fmt.Fprintln(tw, strings.Join(row, "\t"))
			}
			return tw.Flush()
		},
	}
	// What follows NAME is ps's options, not berth's.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// A procInfo is what top reads of one process from /proc.
type procInfo struct {
	pid, ppid, nspid int
	uid              string
	state            string
	comm, args       string
	ttyNr            int
	cpu              time.Duration // user + system
	started          time.Time
	vsz, rss         uint64 // bytes
}

// topColumn is one of top's columns: its header and how to print it.
type topColumn struct {
	header string
	value  func(*procInfo) string
}

var topColumns = map[string]topColumn{
	"uid":   {"UID", func(p *procInfo) string { return p.uid }},
	"pid":   {"PID", func(p *procInfo) string { return strconv.Itoa(p.pid) }},
	"ppid":  {"PPID", func(p *procInfo) string { return strconv.Itoa(p.ppid) }},
	"nspid": {"NSPID", func(p *procInfo) string { return strconv.Itoa(p.nspid) }},
	"c":     {"C", func(p *procInfo) string { return strconv.Itoa(int(cpuPercent(p))) }},
	"pcpu":  {"%CPU", func(p *procInfo) string { return strconv.FormatFloat(cpuPercent(p), 'f', 1, 64) }},
	"stime": {"STIME", func(p *procInfo) string { return startTime(p.started) }},
	"tty":   {"TTY", func(p *procInfo) string { return ttyName(p.ttyNr) }},
	"time":  {"TIME", func(p *procInfo) string { return clockTime(p.cpu) }},
	"etime": {"ELAPSED", func(p *procInfo) string { return clockTime(time.Since(p.started)) }},
	"stat":  {"STAT", func(p *procInfo) string { return p.state }},
	"vsz":   {"VSZ", func(p *procInfo) string { return strconv.FormatUint(p.vsz/1024, 10) }},
	"rss":   {"RSS", func(p *procInfo) string { return strconv.FormatUint(p.rss/1024, 10) }},
	"comm":  {"COMMAND", func(p *procInfo) string { return p.comm }},
	"args":  {"CMD", func(p *procInfo) string { return p.args }},
}

// topAliases are the names ps(1) also accepts for some fields.
var topAliases = map[string]string{"cmd": "args", "command": "args", "start": "stime", "%cpu": "pcpu", "ucmd": "comm", "user": "uid", "s": "stat", "state": "stat"}

func topFieldNames() []string {
	return []string{"uid", "pid", "ppid", "nspid", "c", "pcpu", "stime", "tty", "time", "etime", "stat", "vsz", "rss", "comm", "args"}
}

// topFields reads top's ps options into the columns to print.
func topFields(args []string) ([]string, error) {
	def := []string{"uid", "pid", "ppid", "c", "stime", "tty", "time", "args"}
	switch {
	case len(args) == 0, len(args) == 1 && (args[0] == "-ef" || args[0] == "-e" || args[0] == "-f"):
		return def, nil
	case len(args) == 1 && (args[0] == "aux" || args[0] == "-aux"):
		return []string{"uid", "pid", "pcpu", "vsz", "rss", "tty", "stat", "stime", "time", "args"}, nil
	case len(args) == 2 && args[0] == "-o", len(args) == 1 && strings.HasPrefix(args[0], "-o"):
		list := strings.TrimPrefix(args[len(args)-1], "-o")
		var out []string
		for _, f := range strings.Split(list, ",") {
			f = strings.ToLower(strings.TrimSpace(f))
			if a, ok := topAliases[f]; ok {
				f = a
			}
			if _, ok := topColumns[f]; !ok {
				return nil, invalidFlag("top -o: unknown field %s (want some of %s)", clip.Quote(f), strings.Join(topFieldNames(), ", "))
			}
			out = append(out, f)
		}
		return out, nil
	}
	return nil, invalidFlag("top: ps options %s: berth reads /proc itself and takes only -ef, aux or -o FIELD,...", clip.Quote(strings.Join(args, " ")))
}

// userHZ is the unit of /proc/PID/stat's times on every Linux ABI.
const userHZ = 100

// readProc reads pid's /proc entry, having checked that the process is
// in the cgroup of sandbox id: a PID read from the cgroup's list may have
// been reused by another of the host's processes since.
func readProc(pid int, id string) (*procInfo, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	cg, err := os.ReadFile(dir + "/cgroup")
	if err != nil {
		return nil, err
	}
	if id == "" || !bytes.Contains(cg, []byte(id)) {
		return nil, fs.ErrNotExist
	}
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return nil, err
	}
	// The command name may hold spaces and parentheses: the fields are
	// counted from its last closing parenthesis.
	open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return nil, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[end+1:]))
	if len(f) < 22 {
		return nil, errors.New("malformed stat")
	}
	num := func(i int) uint64 { n, _ := strconv.ParseUint(f[i], 10, 64); return n }
	p := &procInfo{pid: pid, nspid: pid, comm: string(stat[open+1 : end]), state: f[0]}
	p.ppid = int(num(1))
	p.ttyNr = int(num(4))
	p.cpu = time.Duration(num(11)+num(12)) * time.Second / userHZ
	p.started = bootTime().Add(time.Duration(num(19)) * time.Second / userHZ)
	p.vsz = num(20)
	p.rss = num(21) * uint64(os.Getpagesize())
	if status, err := os.Open(dir + "/status"); err == nil {
		sc := bufio.NewScanner(status)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), ":")
			fields := strings.Fields(v)
			switch {
			case k == "Uid" && len(fields) > 0:
				p.uid = fields[0]
			case k == "NSpid" && len(fields) > 0:
				p.nspid, _ = strconv.Atoi(fields[len(fields)-1])
			}
		}
		status.Close()
	}
	// At most a page of arguments: enough to know the process by.
	if cmdline, err := readAtMost(dir+"/cmdline", 4096); err == nil && len(cmdline) > 0 {
		p.args = strings.TrimRight(strings.ReplaceAll(string(cmdline), "\x00", " "), " ")
	} else {
		p.args = "[" + p.comm + "]"
	}
	return p, nil
}

func readAtMost(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := f.Read(buf[got:])
		got += m
		if err != nil || m == 0 {
			break
		}
	}
	return buf[:got], nil
}

// bootTime is when the host booted, from /proc/stat's btime.
func bootTime() time.Time {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(n, 0)
		}
	}
	return time.Time{}
}

func cpuPercent(p *procInfo) float64 {
	elapsed := time.Since(p.started)
	if elapsed <= 0 {
		return 0
	}
	return float64(p.cpu) / float64(elapsed) * 100
}

// startTime prints a start as ps does: the time today, the date before.
func startTime(t time.Time) string {
	if time.Since(t) < 24*time.Hour {
		return t.Local().Format("15:04")
	}
	return t.Local().Format("Jan02")
}

// ttyName names a controlling terminal from stat's tty_nr, as ps does.
func ttyName(nr int) string {
	major, minor := (nr>>8)&0xfff, (nr&0xff)|((nr>>12)&0xfff00)
	switch {
	case nr == 0:
		return "?"
	case major >= 136 && major <= 143:
		return "pts/" + strconv.Itoa((major-136)*256+minor)
	case major == 4:
		return "tty" + strconv.Itoa(minor)
	}
	return "?"
}

// clockTime prints d as [DD-]HH:MM:SS.
func clockTime(d time.Duration) string {
	s := int64(d.Seconds())
	days, h, m := s/86400, s/3600%24, s/60%60
	if days > 0 {
		return fmt.Sprintf("%d-%02d:%02d:%02d", days, h, m, s%60)
	}
	return fmt.Sprintf("%02d:%02d:%02d", h, m, s%60)
}
