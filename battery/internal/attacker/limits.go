package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	register(map[string]attack{
		"fork-bomb":   forkBombAttack,
		"memory-bomb": memoryBombAttack,
		"disk-fill":   diskFillAttack,
		"inotify":     inotifyAttack,
		"mqueue":      mqueueAttack,
	})
}

// forkBombAttack forks idle children until fork fails or cap= of them
// run; reaching cap means nothing bounded it. The children are copies of
// this process that only pause, made with a raw fork so that the Go
// runtime, which cannot start threads once the limit is reached, is not
// involved.
func forkBombAttack(a args) Verdict {
	limit := a.int("cap")
	runtime.LockOSThread()
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(-1)
	var n int64
	for n < limit {
		pid, _, e := syscall.RawSyscall(syscall.SYS_FORK, 0, 0, 0)
		if e != 0 {
			v := refused("fork", e)
			v.Count = n
			v.Detail = fmt.Sprintf("fork failed after %d children: %v", n, e)
			return v
		}
		if pid == 0 {
			pauseForever()
		}
		n++
	}
	v := worked(fmt.Sprintf("forked %d children and nothing stopped it", n))
	v.Count = n
	return v
}

//go:nosplit
func pauseForever() {
	for {
		syscall.RawSyscall(syscall.SYS_PAUSE, 0, 0, 0)
	}
}

// memoryBombAttack maps and touches memory, 16 MiB at a time, up to cap=
// bytes; getting there means nothing bounded it. The cgroup's OOM killer
// ends it first when something does.
func memoryBombAttack(a args) Verdict {
	limit := a.int("cap")
	const chunk = 16 << 20
	var n int64
	for n < limit {
		m, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			v := refused("mmap", err)
			v.Count = n
			return v
		}
		for i := 0; i < chunk; i += 4096 {
			m[i] = 1
		}
		n += chunk
	}
	v := worked(fmt.Sprintf("touched %d MiB and nothing stopped it", n>>20))
	v.Count = n
	return v
}

// diskFillAttack writes path= 1 MiB at a time up to cap= bytes; getting
// there means nothing bounded the sandbox's writable layer.
func diskFillAttack(a args) Verdict {
	limit := a.int("cap")
	fd, err := unix.Open(a.str("path"), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return refused("create", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	var n int64
	for n < limit {
		w, err := unix.Write(fd, buf)
		n += int64(max(w, 0))
		if err == nil {
			err = unix.Fdatasync(fd)
		}
		if err != nil {
			v := refused("write", err)
			v.Count = n
			return v
		}
	}
	v := worked(fmt.Sprintf("wrote %d MiB and nothing stopped it", n>>20))
	v.Count = n
	return v
}

// inUserNamespace reports whether the sandbox has a user namespace of its
// own: then its per-user counters are its own, below the host's.
func inUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// inotifyAttack creates inotify instances. They are counted per user, and
// up through the user namespaces to the host's user that made each, host
// root for every sandbox; hostleft= is what host root's allowance has
// left, less a margin. The attack is made only where the sandbox's own
// counter (user.max_inotify_instances of its user namespace) stops it
// within that, and must stop there; where nothing but the host's
// allowance would stop it, it reports success without trying, so that no
// test ever exhausts host root's allowance.
func inotifyAttack(a args) Verdict {
	left := a.int("hostleft")
	if !inUserNamespace() {
		return worked("no user namespace: instances count against host root's own allowance")
	}
	own, err := readInt("/proc/sys/user/max_inotify_instances")
	if err != nil {
		return notAttempted(err.Error())
	}
	if own > left {
		return worked(fmt.Sprintf("the sandbox's own limit (%d) is more than host root has left (%d): it could take it all", own, left))
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for int64(len(fds)) <= own {
		fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			v := refused("inotify_init1", err)
			v.Count = int64(len(fds))
			return v
		}
		fds = append(fds, fd)
	}
	v := worked(fmt.Sprintf("made %d instances, past its own limit %d", len(fds), own))
	v.Count = int64(len(fds))
	return v
}

// mqueueAttack fills POSIX message queues. Their bytes count against
// RLIMIT_MSGQUEUE per user, host root's for a sandbox without a user
// namespace; the attack is made only where the sandbox's own limit is
// well below the host user's (hostmax= bytes), and must stop there.
func mqueueAttack(a args) Verdict {
	host := a.int("hostmax")
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MSGQUEUE, &r); err != nil {
		return notAttempted(err.Error())
	}
	if int64(r.Max)*4 > host {
		return worked(fmt.Sprintf("RLIMIT_MSGQUEUE %d does not bound the sandbox below the host user's %d", r.Max, host))
	}
	r.Cur = r.Max
	unix.Setrlimit(unix.RLIMIT_MSGQUEUE, &r)
	// struct mq_attr: flags, maxmsg, msgsize, curmsgs and four reserved.
	attr := struct {
		Flags, Maxmsg, Msgsize, Curmsgs int64
		_                               [4]int64
	}{Maxmsg: 8, Msgsize: 1024}
	var made int64
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for i := 0; i < 1024; i++ {
		name := []byte(fmt.Sprintf("battery-%d\x00", i))
		fd, _, e := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(&name[0])),
			unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600, uintptr(unsafe.Pointer(&attr)), 0, 0)
		if e != 0 {
			v := refused("mq_open", e)
			v.Count = made
			if !errors.Is(e, unix.EMFILE) && !errors.Is(e, unix.ENOMEM) {
				v.Detail += " (not the per-user limit)"
			}
			return v
		}
		fds = append(fds, int(fd))
		made += attr.Maxmsg * attr.Msgsize
	}
	v := worked(fmt.Sprintf("queued room for %d bytes", made))
	v.Count = made
	return v
}
