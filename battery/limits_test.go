package battery

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Bounds on the limit cases, so that a missing limit costs the host a
// little and never all it has.
const (
	// maxPidsToTry is the most processes the fork bomb makes: a pids
	// limit above it bounds nothing a shared host would notice.
	maxPidsToTry = 8192
	// unboundedForks is how far the bomb goes when no limit is set: far
	// enough to say nothing stopped it.
	unboundedForks = 512
	// unboundedMemory is how much the memory bomb touches when no limit
	// is set.
	unboundedMemory = 256 << 20
	// diskQuota is the writable layer's quota in the disk case, and
	// diskToTry how much the sandbox tries to write.
	diskQuota = 4 << 20
	diskToTry = 16 << 20
)

// limitCases exhaust resources the host shares with the sandbox.
func limitCases() []hostile {
	return []hostile{
		{
			name:    "limit-fork-bomb",
			attacks: "forks without end to take the host's process table",
			prepare: func(t *testing.T, a *attempt) {
				limit := a.sec.PidsMax
				switch {
				case limit == 0:
					a.attack("fork-bomb", "cap", unboundedForks)
				case limit > maxPidsToTry:
					t.Fatalf("the %s pids limit %d is no bound: the battery wants one of at most %d", a.variant, limit, maxPidsToTry)
				default:
					a.attack("fork-bomb", "cap", limit+16)
				}
			},
			judge: func(a *attempt) string {
				if leak := ordinaryJudgement(a, "EAGAIN"); leak != "" {
					return leak
				}
				if a.verdict.Count >= a.sec.PidsMax {
					return fmt.Sprintf("%d processes forked, at or past the limit %d", a.verdict.Count, a.sec.PidsMax)
				}
				return ""
			},
		},
		{
			name:    "limit-memory-bomb",
			attacks: "touches memory without end to take the host's",
			prepare: func(t *testing.T, a *attempt) {
				limit := a.sec.MemoryMax
				switch {
				case limit == 0:
					a.attack("memory-bomb", "cap", unboundedMemory)
				case limit+64<<20 > memAvailable(t)/2:
					t.Skipf("the %s memory limit %d is more than this host can spare to prove it", a.variant, limit)
				default:
					a.attack("memory-bomb", "cap", limit+64<<20)
				}
			},
			judge: func(a *attempt) string {
				// The OOM killer ends the bomb before it can say so.
				if a.res != nil && (a.res.OOMKilled || a.res.Signal == syscall.SIGKILL) {
					return ""
				}
				return ordinaryJudgement(a, "ENOMEM")
			},
		},
		{
			name:    "limit-disk-filler",
			attacks: "fills the host's disk through the writable layer",
			prepare: func(t *testing.T, a *attempt) {
				a.opts.DiskQuota = diskQuota
				a.attack("disk-fill", "path", "/var/tmp/battery-fill", "cap", diskToTry)
			},
			judge: func(a *attempt) string {
				v := a.verdict
				if leak := ordinaryJudgement(a, ""); leak != "" {
					return leak
				}
				if v.Errno != "ENOSPC" && v.Errno != "EDQUOT" && v.Errno != "EROFS" {
					return "stopped by " + v.String() + ", not by a quota"
				}
				if v.Count > diskQuota+1<<20 {
					return fmt.Sprintf("wrote %d bytes past a %d-byte quota", v.Count, diskQuota)
				}
				return ""
			},
		},
		{
			name:    "limit-inotify",
			attacks: "takes the inotify instances host root's programs need",
			kept: map[string]string{
				presetDefault.name: "without a user namespace a sandbox's root is counted as the host's root; the battery never exhausts that allowance (SECURITY.md; Strict gives the sandbox its own counter)",
			},
			prepare: func(t *testing.T, a *attempt) {
				host, err := readHostInt("/proc/sys/fs/inotify/max_user_instances")
				if err != nil {
					t.Fatal(err)
				}
				// What root's programs (and other sandboxes) hold now is
				// not the sandbox's to take: it may try only what stays
				// clear of the host's allowance with room to spare.
				a.attack("inotify", "hostleft", host-inotifyInstancesInUse()-16)
			},
			errno: "EMFILE",
		},
		{
			name:    "limit-mqueue",
			attacks: "takes the POSIX message-queue bytes host root's programs need",
			prepare: func(t *testing.T, a *attempt) {
				var r unix.Rlimit
				if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &r); err != nil {
					t.Fatal(err)
				}
				a.attack("mqueue", "hostmax", r.Cur)
			},
		},
		{
			name: "limit-rlimit-raise", errno: "EPERM",
			attacks: "raises its hard resource limits",
			prepare: func(t *testing.T, a *attempt) {
				hostCanRaiseMsgqueue(t)
				a.attack("rlimit-raise")
			},
		},
	}
}

// inotifyInstancesInUse counts the inotify instances open on the host, an
// upper bound on what host root's allowance has given out.
func inotifyInstancesInUse() int64 {
	var n int64
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		fds, _ := os.ReadDir("/proc/" + p.Name() + "/fd")
		for _, fd := range fds {
			if l, _ := os.Readlink("/proc/" + p.Name() + "/fd/" + fd.Name()); l == "anon_inode:inotify" {
				n++
			}
		}
	}
	return n
}

// memAvailable is the host's MemAvailable, in bytes.
func memAvailable(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}

func readHostInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// hostCanRaiseMsgqueue skips the case unless the host's root can raise
// its own hard RLIMIT_MSGQUEUE (it needs CAP_SYS_RESOURCE, which some
// build machines withhold even from root): where it cannot, a refusal in
// the sandbox proves nothing. It puts the limit back.
func hostCanRaiseMsgqueue(t *testing.T) {
	t.Helper()
	var was unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &was); err != nil {
		t.Fatal(err)
	}
	if was.Max == unix.RLIM_INFINITY {
		return
	}
	raised := unix.Rlimit{Cur: was.Cur, Max: was.Max + 1}
	if err := unix.Setrlimit(unix.RLIMIT_MSGQUEUE, &raised); err != nil {
		t.Skipf("the host's own root cannot raise RLIMIT_MSGQUEUE here (%v), so a refusal would prove nothing", err)
	}
	unix.Setrlimit(unix.RLIMIT_MSGQUEUE, &was)
}
