package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"text/template"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/cgroup"
	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

// inspectInfo is one object of berth inspect's JSON array. Its field
// names are kept stable, and follow Docker's where the two mean the same
// thing, so that `jq .[0].State.Status` and `--format
// '{{.State.Pid}}'` work as Docker users expect:
//
//	Id, SandboxId     the container's ID (its first sandbox's), the live sandbox's
//	Name, Created, Detached, RestartCount, LogPath
//	Path, Args        the program PID 1 runs (ran) and its arguments, the
//	                  image's entrypoint included
//	Config            Image, ImageDigest, Cmd, Env, User, WorkingDir, Hostname, Labels
//	State             Status (created|running|restarting|exited|dead), Running,
//	                  Pid (PID 1's on the host), ExitCode, StartedAt, FinishedAt, Error
//	NetworkSettings   SandboxKey (the network namespace), Networks (by name:
//	                  Interface, IPAddress, IPPrefixLen, Gateway, IPAddresses),
//	                  Ports ("80/tcp": [{HostIp, HostPort}], the host port bound)
//	Mounts            Type, Source, Destination, RW, Options
//	Resources         Memory, MemorySwap (bytes), NanoCpus, CpuQuota, CpuPeriod (µs),
//	                  CpuWeight, PidsLimit, IOWeight; 0 means no limit
type inspectInfo struct {
	ID              string           `json:"Id"`
	SandboxID       string           `json:"SandboxId"`
	Name            string           `json:"Name"`
	Created         time.Time        `json:"Created"`
	Detached        bool             `json:"Detached"`
	RestartCount    int              `json:"RestartCount"`
	LogPath         string           `json:"LogPath"`
	Path            string           `json:"Path"`
	Args            []string         `json:"Args"`
	Config          inspectConfig    `json:"Config"`
	State           inspectState     `json:"State"`
	NetworkSettings inspectNetwork   `json:"NetworkSettings"`
	Mounts          []inspectMount   `json:"Mounts"`
	Resources       inspectResources `json:"Resources"`
}

type inspectConfig struct {
	Image       string            `json:"Image"`
	ImageDigest string            `json:"ImageDigest"`
	Cmd         []string          `json:"Cmd"`
	Env         []string          `json:"Env"`
	User        string            `json:"User"`
	WorkingDir  string            `json:"WorkingDir"`
	Hostname    string            `json:"Hostname"`
	Labels      map[string]string `json:"Labels"`
}

type inspectState struct {
	Status     string    `json:"Status"`
	Running    bool      `json:"Running"`
	Pid        int       `json:"Pid"`
	ExitCode   int       `json:"ExitCode"`
	StartedAt  time.Time `json:"StartedAt"`
	FinishedAt time.Time `json:"FinishedAt"`
	Error      string    `json:"Error"`
}

type inspectNetwork struct {
	SandboxKey string                          `json:"SandboxKey"`
	Networks   map[string]inspectEndpoint      `json:"Networks"`
	Ports      map[string][]inspectPortBinding `json:"Ports"`
}

type inspectEndpoint struct {
	Interface   string   `json:"Interface"`
	IPAddress   string   `json:"IPAddress"`
	IPPrefixLen int      `json:"IPPrefixLen"`
	Gateway     string   `json:"Gateway"`
	IPAddresses []string `json:"IPAddresses"`
}

type inspectPortBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

type inspectMount struct {
	Type        string `json:"Type"`
	Source      string `json:"Source"`
	Destination string `json:"Destination"`
	RW          bool   `json:"RW"`
	Options     string `json:"Options"`
}

type inspectResources struct {
	Memory     int64  `json:"Memory"`
	MemorySwap int64  `json:"MemorySwap"`
	NanoCpus   int64  `json:"NanoCpus"`
	CPUQuota   int64  `json:"CpuQuota"`
	CPUPeriod  int64  `json:"CpuPeriod"`
	CPUWeight  uint64 `json:"CpuWeight"`
	PidsLimit  int64  `json:"PidsLimit"`
	IOWeight   uint16 `json:"IOWeight"`
}

func newInspectCommand(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [--format TEMPLATE] NAME...",
		Short: "Describe sandboxes as JSON: configuration, state, network, ports, mounts, limits",
		Long: `Describe sandboxes, detached or not, running or exited, as a JSON array
with one object per NAME (a name, an ID or an ID prefix). The fields:

  Id, SandboxId     the container's ID (its first sandbox's), the live sandbox's
  Name, Created, Detached, RestartCount, LogPath
  Path, Args        the program PID 1 runs (ran), the image's entrypoint
                    included, and its arguments
  Config            Image, ImageDigest, Cmd, Env, User, WorkingDir, Hostname, Labels
  State             Status (created, running, restarting, exited or dead),
                    Running, Pid (PID 1's, on the host), ExitCode, StartedAt,
                    FinishedAt, Error
  NetworkSettings   SandboxKey (its network namespace), Networks (by name:
                    Interface, IPAddress, IPPrefixLen, Gateway, IPAddresses),
                    Ports ("80/tcp": [{"HostIp", "HostPort"}], the port bound)
  Mounts            Type, Source, Destination, RW, Options
  Resources         Memory, MemorySwap (bytes), NanoCpus, CpuQuota and
                    CpuPeriod (µs), CpuWeight, PidsLimit, IOWeight; 0: none

With --format, each object goes through the Go template instead, e.g.
--format '{{.State.Pid}}'. Every NAME is described that can be; berth
inspect then fails if one could not.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tmpl, _, err := psTemplate(format, false)
			if err != nil {
				return err
			}
			var infos []*inspectInfo
			var failed error
			for _, name := range args {
				l, err := g.find(cmd.Context(), name)
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "berth inspect: %v\n", err)
					failed = err
					continue
				}
				infos = append(infos, g.inspect(cmd.Context(), l))
			}
			if format == "" || format == "json" {
				b, err := inspectJSON(infos)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n", b)
			} else {
				for _, info := range infos {
					out, err := formatInspect(tmpl, info)
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), out)
				}
			}
			if failed != nil {
				// Each failure is on standard error already.
				return exitError(exitFailure)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "a Go template for each sandbox, instead of JSON")
	return cmd
}

// inspectJSON is inspect's JSON array of infos. encoding/json escapes the
// C0 controls (ESC among them) but leaves DEL and the C1 controls raw, a
// CSI (U+009B) among them, which some terminals obey: those are escaped
// too. In JSON they can only be in strings, where \u00XX means the same.
func inspectJSON(infos []*inspectInfo) ([]byte, error) {
	if infos == nil {
		return []byte("[]"), nil
	}
	b, err := json.MarshalIndent(infos, "", "    ")
	if err != nil {
		return nil, err
	}
	isC1 := func(r rune) bool { return r >= 0x7f && r <= 0x9f }
	if !bytes.ContainsFunc(b, isC1) {
		return b, nil
	}
	var out bytes.Buffer
	for _, r := range string(b) {
		if isC1(r) {
			fmt.Fprintf(&out, "\\u%04x", r)
		} else {
			out.WriteRune(r)
		}
	}
	return out.Bytes(), nil
}

// formatInspect runs tmpl over info. The template sees the JSON's names,
// {{.Id}}, as Docker's does: it runs over the JSON, decoded. Every string
// in it has its control characters escaped first: a label, a command or
// an environment variable that a caller or an image chose cannot send
// the terminal an escape sequence, nor print a line that looks like
// another's, as the JSON without --format cannot either.
func formatInspect(tmpl *template.Template, info *inspectInfo) (string, error) {
	j, err := json.Marshal(info)
	if err != nil {
		return "", err
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, escapeStrings(v)); err != nil {
		return "", invalidFlag("--format: %w", err)
	}
	return b.String(), nil
}

// escapeStrings escapes the control characters of every string in v,
// decoded JSON, map keys included.
func escapeStrings(v any) any {
	switch v := v.(type) {
	case string:
		return clip.Controls(v)
	case []any:
		for i := range v {
			v[i] = escapeStrings(v[i])
		}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[clip.Controls(k)] = escapeStrings(x)
		}
		return out
	}
	return v
}

// inspect describes l. What it cannot learn (a network record removed
// meanwhile) it leaves empty rather than failing: the rest still holds.
func (g *globals) inspect(ctx context.Context, l *listed) *inspectInfo {
	info := &inspectInfo{
		ID: l.ID, SandboxID: l.SandboxID, Name: l.Name, Created: l.Created, Detached: l.Detached,
		RestartCount: l.RestartCount, LogPath: l.Log,
		Config: inspectConfig{Image: l.Image, Cmd: l.Args, Labels: l.Labels},
		Args:   []string{},
		State: inspectState{
			Status: l.State, Running: l.State == "running", ExitCode: l.ExitCode,
			StartedAt: l.Started, FinishedAt: l.Finished, Error: cmp.Or(l.Problem, l.Error),
		},
		NetworkSettings: inspectNetwork{Networks: map[string]inspectEndpoint{}, Ports: map[string][]inspectPortBinding{}},
		Mounts:          []inspectMount{},
	}
	if len(l.Command) > 0 {
		info.Path, info.Args = l.Command[0], append(info.Args, l.Command[1:]...)
	}
	// Empty rather than null, for jq and templates.
	if info.Config.Labels == nil {
		info.Config.Labels = map[string]string{}
	}
	if info.Config.Cmd == nil {
		info.Config.Cmd = []string{}
	}
	info.Config.Env = []string{}
	// An exited container's settings are its last sandbox's.
	if st := cmp.Or(l.Sandbox, l.Last); st != nil {
		info.Config.ImageDigest, info.Config.User = st.ImageDigest, st.User
		info.Config.Env = append(info.Config.Env, st.Env...)
		info.Config.WorkingDir, info.Config.Hostname = st.Dir, st.Hostname
		if len(info.Config.Cmd) == 0 && st.Args != nil {
			info.Config.Cmd = st.Args
		}
		for _, m := range st.Mounts {
			t := m.Type
			if t == "" {
				t = "bind"
			}
			info.Mounts = append(info.Mounts, inspectMount{Type: t, Source: m.Source, Destination: m.Destination, RW: !m.ReadOnly, Options: m.Options})
		}
		info.Resources = limitsOf(st)
		if l.State == "running" {
			info.State.Pid = st.Init.PID
			info.NetworkSettings.SandboxKey = "/proc/" + strconv.Itoa(st.Init.PID) + "/ns/net"
		}
	}
	atts, _ := g.attachments(ctx, l.SandboxID)
	for _, a := range atts {
		ep := inspectEndpoint{Interface: a.Interface, IPAddresses: []string{}}
		if a.Gateway.IsValid() {
			ep.Gateway = a.Gateway.String()
		}
		for _, p := range a.IPs {
			ep.IPAddresses = append(ep.IPAddresses, p.String())
			if ep.IPAddress == "" && p.Addr().Is4() {
				ep.IPAddress, ep.IPPrefixLen = p.Addr().String(), p.Bits()
			}
		}
		if ep.IPAddress == "" && len(a.IPs) > 0 {
			ep.IPAddress, ep.IPPrefixLen = a.IPs[0].Addr().String(), a.IPs[0].Bits()
		}
		info.NetworkSettings.Networks[a.Network] = ep
	}
	for _, p := range g.ports(ctx, l) {
		key := strconv.Itoa(int(p.ContainerPort)) + "/" + protocol(p)
		info.NetworkSettings.Ports[key] = append(info.NetworkSettings.Ports[key], inspectPortBinding{HostIP: cmp.Or(p.HostIP, "0.0.0.0"), HostPort: strconv.Itoa(int(p.HostPort))})
	}
	return info
}

// limitsOf returns the cgroup limits st's sandbox was made with: the
// caller's, and the security preset's defaults where it set none.
func limitsOf(st *sandbox.State) inspectResources {
	r := cgroup.Resources{}
	if st.Resources != nil {
		r = *st.Resources
	}
	if sec := st.Security; sec != nil {
		if r.MemoryMax == 0 {
			r.MemoryMax = sec.MemoryMax
		}
		if r.PidsMax == 0 {
			r.PidsMax = sec.PidsMax
		}
	}
	out := inspectResources{
		Memory: max(r.MemoryMax, 0), MemorySwap: r.MemorySwapMax, CPUWeight: r.CPUWeight,
		PidsLimit: max(r.PidsMax, 0), IOWeight: r.IOWeight,
	}
	if r.CPUQuota > 0 {
		period := r.CPUPeriod
		if period == 0 {
			period = 100 * time.Millisecond
		}
		out.CPUQuota, out.CPUPeriod = r.CPUQuota.Microseconds(), period.Microseconds()
		out.NanoCpus = int64(float64(r.CPUQuota) / float64(period) * 1e9)
	}
	return out
}
