//go:build soak

package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// maxGCPasses bounds how often collect runs berth gc: each pass may find
// what the one before could not reclaim yet, but it must converge.
const maxGCPasses = 5

// netRunDir is netplug's default state directory, which the berth
// command uses; the soak's network has its own entries in it.
const netRunDir = "/run/berth/networks"

// collect runs berth gc until a pass succeeds and leaves no sandbox,
// rootfs or cgroup behind.
func (s *soak) collect() {
	ctx := context.Background()
	for s.stats.GCPasses < maxGCPasses {
		s.stats.GCPasses++
		out, err := s.command(ctx, "gc").CombinedOutput()
		s.t.Logf("berth gc, pass %d: %v\n%s", s.stats.GCPasses, err, bytes.TrimSpace(out))
		if err == nil && len(s.sandboxDirs())+len(s.rootfsDirs())+len(s.cgroups()) == 0 {
			s.stats.Converged = true
			break
		}
	}
}

// removeNetwork removes the soak's network, which must work once nothing
// is attached, and returns what is left of it.
func (s *soak) removeNetwork() []string {
	ctx := context.Background()
	if out, err := s.command(ctx, "network", "rm", s.network).CombinedOutput(); err != nil {
		return []string{fmt.Sprintf("network: berth network rm %s: %v: %s", s.network, err, bytes.TrimSpace(out))}
	}
	var left []string
	if _, err := os.Stat("/sys/class/net/" + s.bridge); err == nil {
		left = append(left, "network: bridge "+s.bridge+" after berth network rm")
	}
	if out, err := s.command(ctx, "network", "ls").Output(); err != nil || bytes.Contains(out, []byte(s.network+" ")) {
		left = append(left, fmt.Sprintf("network: berth network ls still lists %s (%v)", s.network, err))
	}
	return left
}

// audit returns everything the soak's sandboxes and imports left.
func (s *soak) audit() []string {
	var left []string
	add := func(what string, items []string) {
		for _, i := range items {
			left = append(left, what+": "+i)
		}
	}
	add("mount", s.mounts())
	add("cgroup", s.cgroups())
	add("process", s.processes())
	add("state", s.sandboxDirs())
	add("rootfs", s.rootfsDirs())
	add("temporary file", s.tempFiles())
	add("loop device", s.loopDevices())
	add("network", s.networkLeftovers())
	add("rule", s.rules())
	add("image check", s.imageCheck())
	return left
}

// mounts returns the mount points under the soak's directory.
func (s *soak) mounts() []string {
	var out []string
	for _, m := range mountinfo() {
		if m.point == s.dir || strings.HasPrefix(m.point, s.dir+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

type mount struct{ point, fstype string }

func mountinfo() []mount {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mount
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 {
			continue
		}
		out = append(out, mount{point: unescapeOctal(f[4]), fstype: g[0]})
	}
	return out
}

// unescapeOctal undoes mountinfo's \NNN escapes of blanks and backslashes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroups returns the soak's cgroup parent and everything below it, in
// every hierarchy mounted (v1 controllers, named ones, and cgroup2).
func (s *soak) cgroups() []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range mountinfo() {
		if (m.fstype != "cgroup" && m.fstype != "cgroup2") || seen[m.point] {
			continue
		}
		seen[m.point] = true
		filepath.WalkDir(filepath.Join(m.point, s.parent), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// processes returns the processes in the soak's cgroups, and berth
// commands of the soak's still running. A process may be on its way out
// (a zombie whose parent has not reaped it yet): it has a few seconds.
func (s *soak) processes() []string {
	var out []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out = s.processesNow()
		if len(out) == 0 || time.Now().After(deadline) {
			return out
		}
	}
}

func (s *soak) processesNow() []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		ours := exe == s.berth && bytes.Contains(cmdline, []byte(s.root))
		if ours || inCgroupUnder(pid, s.parent) {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			out = append(out, fmt.Sprintf("%d %q, stat %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}), bytes.TrimSpace(stat)))
		}
	}
	return out
}

// sandboxDirs returns what is in the soak's state directory but what is
// meant to stay there: the cache of compiled seccomp programs and the lock
// that sandboxes' starters and gc share.
func (s *soak) sandboxDirs() []string {
	var out []string
	for _, p := range dirEntries(s.state) {
		if name := filepath.Base(p); name != "seccomp" && name != ".lock" {
			out = append(out, p)
		}
	}
	return out
}

// rootfsDirs returns the rootfses prepared in the soak's store.
func (s *soak) rootfsDirs() []string { return dirEntries(filepath.Join(s.root, "rootfs")) }

func dirEntries(dir string) []string {
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	return out
}

// tempFiles returns the staging areas and temporary files left in the
// store, the state directory and beside the exports: anything in the store's tmp, and files
// named as writers name their temporary files, outside unpacked layers
// (whose files are the images').
func (s *soak) tempFiles() []string {
	out := dirEntries(filepath.Join(s.root, "tmp"))
	for _, dir := range []string{s.root, s.state, filepath.Join(s.dir, "exports")} {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && filepath.Dir(p) == filepath.Join(s.root, "layers") {
				return fs.SkipDir
			}
			name := d.Name()
			if strings.HasPrefix(name, ".tmp-") || strings.Contains(name, ".tmp") {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// loopDevices returns the loop devices backed by files in the soak's
// directory (disk quotas' filesystems, where the store has no project
// quotas).
func (s *soak) loopDevices() []string {
	var out []string
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		backing := strings.TrimSpace(string(b))
		if err == nil && strings.HasPrefix(backing, s.dir+"/") {
			out = append(out, filepath.Base(filepath.Dir(filepath.Dir(f)))+" on "+backing)
		}
	}
	return out
}

// networkLeftovers returns the soak network's bridge and ports, IPAM
// leases, attachment records and CNI cache entries.
func (s *soak) networkLeftovers() []string {
	var out []string
	if _, err := os.Stat("/sys/class/net/" + s.bridge); err == nil {
		out = append(out, "bridge "+s.bridge)
	}
	ports, _ := bridgePorts(s.bridge)
	for _, p := range ports {
		out = append(out, "port "+p+" of "+s.bridge)
	}
	// Ports seen during the soak, should they have left the bridge
	// but not the host.
	for p := range s.ports {
		if _, err := os.Stat("/sys/class/net/" + p); err == nil {
			out = append(out, "interface "+p)
		}
	}
	leases, _ := filepath.Glob(filepath.Join(netRunDir, "ipam", s.cniName, "*"))
	for _, l := range leases {
		if _, err := netip.ParseAddr(filepath.Base(l)); err == nil {
			out = append(out, "IPAM lease "+l)
		}
	}
	records, _ := filepath.Glob(filepath.Join(netRunDir, "attachments", s.cniName, "*"))
	out = append(out, records...)
	cached, _ := filepath.Glob(filepath.Join(netRunDir, "cache", "results", s.cniName+"-*"))
	out = append(out, cached...)
	return out
}

// bridgePorts returns the interfaces enslaved to bridge.
func bridgePorts(bridge string) ([]string, error) {
	entries, err := os.ReadDir("/sys/class/net/" + bridge + "/brif")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out, nil
}

// rules returns the iptables and nftables rules that name the soak's
// network, its bridge, or a sandbox or bridge port it saw. The CNI
// plugins' rules carry the network's name and the sandbox's ID in their
// comments; berth's port filters are named after the port.
func (s *soak) rules() []string {
	needles := []string{s.cniName + `\"`, s.cniName + `"`, s.bridge + " "}
	for id := range s.seen {
		needles = append(needles, id)
	}
	for p := range s.ports {
		needles = append(needles, "port-"+p, `"`+p+`"`)
	}
	var out []string
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"}} {
		b, err := exec.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			out = append(out, fmt.Sprintf("cannot list them with %s: %v", cmd[0], err))
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, n := range needles {
				if strings.Contains(line, n) {
					out = append(out, cmd[0]+": "+strings.TrimSpace(line))
					break
				}
			}
		}
	}
	return out
}

// imageCheck returns what berth image check finds wrong with the store.
func (s *soak) imageCheck() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := s.command(ctx, "image", "check", "--layers").CombinedOutput()
	if err == nil {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		lines = append(lines, err.Error())
	}
	return lines
}

// cleanUp removes what the soak left, as far as it can, so that a failed
// soak does not leave the host worse off: the processes in its cgroups,
// its mounts, loop devices, cgroups, and its network with its rules and
// cache entries.
func (s *soak) cleanUp() {
	if len(s.audit()) == 0 {
		os.RemoveAll(s.dir)
		return
	}
	ctx := context.Background()
	for range 3 {
		for _, c := range s.cgroups() {
			b, _ := os.ReadFile(filepath.Join(c, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && inCgroupUnder(pid, s.parent) {
					if fd, err := unix.PidfdOpen(pid, 0); err == nil {
						if inCgroupUnder(pid, s.parent) {
							unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
						}
						unix.Close(fd)
					}
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
		s.command(ctx, "gc").Run()
		mounts := s.mounts()
		for i := len(mounts) - 1; i >= 0; i-- {
			unix.Unmount(mounts[i], unix.MNT_DETACH)
		}
		cgroups := s.cgroups()
		for i := len(cgroups) - 1; i >= 0; i-- {
			os.Remove(cgroups[i])
		}
	}
	s.command(ctx, "network", "rm", s.network).Run()
	s.removeRules()
	// CNI result cache entries of the soak's network, by their names.
	cached, _ := filepath.Glob(filepath.Join(netRunDir, "cache", "results", s.cniName+"-*"))
	for _, p := range cached {
		os.Remove(p)
	}
	for _, l := range s.loopDevices() {
		dev, _, _ := strings.Cut(l, " ")
		exec.Command("losetup", "-d", "/dev/"+dev).Run()
	}
	left := s.audit()
	if len(s.mounts()) == 0 {
		// Whatever else is left under the soak's directory is its own.
		os.RemoveAll(s.dir)
		left = slices.DeleteFunc(left, func(l string) bool { return strings.Contains(l, s.dir+"/") })
	}
	if len(left) > 0 {
		s.t.Logf("after cleaning up, still left (remove by hand):\n\t%s", strings.Join(left, "\n\t"))
	}
}

// removeRules deletes the iptables rules whose comments name the soak's
// network (the CNI plugins' for its sandboxes), and the chains they jump
// to once those are empty.
func (s *soak) removeRules() {
	for _, table := range []string{"nat", "filter", "mangle"} {
		b, err := exec.Command("iptables-save", "-t", table).Output()
		if err != nil {
			continue
		}
		chains := map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			rule, ok := strings.CutPrefix(line, "-A ")
			if !ok || !strings.Contains(rule, s.cniName+`\"`) {
				continue
			}
			if _, target, ok := strings.Cut(rule, " -j CNI-"); ok {
				chains["CNI-"+strings.Fields(target)[0]] = true
			}
			// iptables-save quotes as a shell would read it.
			exec.Command("sh", "-c", "iptables -t "+table+" -D "+rule).Run()
		}
		for c := range chains {
			if out, err := exec.Command("iptables", "-t", table, "-S", c).Output(); err == nil && strings.Count(string(out), "\n-A ") == 0 && !strings.HasPrefix(string(out), "-A ") {
				exec.Command("iptables", "-t", table, "-X", c).Run()
			}
		}
	}
}

// proveAudit runs a sandbox that holds one of everything the audit looks
// for, and requires the audit to see each kind while it runs: an audit
// blind to a kind would pass the soak whatever leaked. Then it kills the
// sandbox's berth command, leaving the sandbox for gc like any other.
func (s *soak) proveAudit() {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	port := fmt.Sprintf("127.0.0.1:%d:80", s.portBase+9999)
	cmd := s.command(ctx, "run", "--disk", "16m", "--net", s.network, "-p", port, "soak:alpine", "sleep", "60")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start berth: %v", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	for deadline := time.Now().Add(time.Minute); s.liveSandbox() == ""; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("the audit's proof sandbox did not start: %s", stderr.String())
		}
	}
	s.look()
	seen := map[string]bool{}
	for _, l := range s.audit() {
		kind, _, _ := strings.Cut(l, ": ")
		seen[kind] = true
	}
	for _, kind := range []string{"mount", "cgroup", "process", "state", "rootfs", "loop device", "network", "rule"} {
		if !seen[kind] {
			s.t.Errorf("the audit does not see the %ss of a running sandbox with a disk quota and a published port", kind)
		}
	}
	if s.t.Failed() {
		s.t.FailNow()
	}
}
