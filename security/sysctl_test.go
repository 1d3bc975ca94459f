package security

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSysctlNamespace(t *testing.T) {
	for key, want := range map[string]int{
		"net.ipv4.ping_group_range":           unix.CLONE_NEWNET,
		"net/ipv4/conf/eth0.100/rp_filter":    unix.CLONE_NEWNET,
		"kernel.shmmax":                       unix.CLONE_NEWIPC,
		"kernel.shm_rmid_forced":              unix.CLONE_NEWIPC,
		"fs.mqueue.queues_max":                unix.CLONE_NEWIPC,
		"kernel/sem":                          unix.CLONE_NEWIPC,
		"kernel.domainname":                   unix.CLONE_NEWUTS,
		"user.max_inotify_instances":          unix.CLONE_NEWUSER,
		"net.ipv4.ip_unprivileged_port_start": unix.CLONE_NEWNET,
	} {
		if got, err := SysctlNamespace(key); err != nil || got != want {
			t.Errorf("%s: %#x %v, want %#x", key, got, err, want)
		}
	}
	for _, key := range []string{
		"kernel.panic", "vm.overcommit_memory", "fs.inotify.max_user_instances", "kernel.hostname",
		"kernel.shmmaxx", "network.x", "net", "", "net..ipv4", "net/../kernel/panic", "net/./x",
		"/net/ipv4/x", "net.ipv4.x\n", "net.ipv4 x", "kernel.msgmax/../../vm/x",
	} {
		if _, err := SysctlNamespace(key); !errors.Is(err, ErrSysctl) {
			t.Errorf("%q: %v, want ErrSysctl", key, err)
		}
	}
	if p := SysctlPath("net.ipv4.ping_group_range"); p != "net/ipv4/ping_group_range" {
		t.Errorf("path %s", p)
	}
	if p := SysctlPath("net/ipv4/conf/eth0.100/rp_filter"); p != "net/ipv4/conf/eth0.100/rp_filter" {
		t.Errorf("path %s", p)
	}
	for _, v := range []string{"", "a\x00b", string(make([]byte, 4097))} {
		if err := CheckSysctlValue("k", v); !errors.Is(err, ErrSysctl) {
			t.Errorf("value %q accepted", v)
		}
	}
}

// The presets' limits: Default bounds processes, memory and message
// queues; Strict bounds more, and inotify in its user namespace; their
// sysctls are all of namespaces a sandbox has.
func TestPresetLimits(t *testing.T) {
	d := Default()
	if d.PidsMax != 4096 || d.MemoryMax <= 0 || d.MemoryMax%(1<<20) != 0 {
		t.Errorf("default limits: pids %d memory %d", d.PidsMax, d.MemoryMax)
	}
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	if total := int64(si.Totalram) * int64(si.Unit); d.MemoryMax > total*3/4 || d.MemoryMax < total*3/4-(1<<20) {
		t.Errorf("default memory %d of %d", d.MemoryMax, total)
	}
	s := Strict()
	if s.PidsMax != 256 || s.MemoryMax != 512<<20 {
		t.Errorf("strict limits: pids %d memory %d", s.PidsMax, s.MemoryMax)
	}
	for _, c := range []*Config{d, s} {
		var msgqueue bool
		for _, r := range c.Rlimits {
			msgqueue = msgqueue || r.Resource == unix.RLIMIT_MSGQUEUE && r.Hard > 0 && r.Hard <= 200<<10
		}
		if !msgqueue {
			t.Errorf("no RLIMIT_MSGQUEUE: %+v", c.Rlimits)
		}
		for k := range c.Sysctls {
			if _, err := SysctlNamespace(k); err != nil {
				t.Error(err)
			}
		}
	}
	if s.Sysctls["user.max_inotify_instances"] == "" || s.Sysctls["user.max_inotify_watches"] == "" {
		t.Errorf("strict sysctls %v", s.Sysctls)
	}
	if u := Unconfined(); u.PidsMax != 0 || u.MemoryMax != 0 || len(u.Rlimits) != 0 {
		t.Errorf("unconfined has limits: %+v", u)
	}
}
