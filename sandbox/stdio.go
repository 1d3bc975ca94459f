package sandbox

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A workload's standard streams are pipes unless its caller hands over
// files on purpose (Options.HandOverStdio). A host file given to the
// workload as it is would be the host's open file in the sandbox's hands:
// reopened through /proc/self/fd it reads what the host wrote there
// before and overwrites it, ftruncate and lseek work on it, and a host
// terminal takes ioctls such as TIOCSTI, which types into the host's
// shell. Through a pipe the workload can only add to the stream, in order.

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// hostWriter hides an *os.File behind a writer, so that os/exec copies
// to it through a pipe instead of passing the file itself on.
type hostWriter struct{ io.Writer }

// hostStreams are what the host holds of a workload's piped streams:
// release them once the process is gone and its output copied.
type hostStreams struct {
	feed *inputFeed
	// dups are the caller's files, duplicated, that output is copied to:
	// a caller may close its own as soon as the start has returned, as
	// with os/exec, and a reader of a pipe given as Stdout then sees its
	// end when the copying is done.
	dups []*os.File
}

// release stops the feed and closes the duplicates.
func (h *hostStreams) release() {
	h.feed.stop()
	for _, f := range h.dups {
		f.Close()
	}
	h.feed, h.dups = nil, nil
}

// pipedStdio returns the streams to give the process that runs a
// workload: writers that are files are wrapped so that os/exec gives the
// process a pipe and copies from it, and a reader other than nil becomes
// the read end of a pipe that the feed fills once started. nil stays nil
// (os/exec's /dev/null). With handOver, files pass unchanged, as os/exec
// would pass them.
func pipedStdio(in io.Reader, out, errw io.Writer, handOver bool) (stdio, hostStreams, error) {
	std := stdio{in: in, out: out, err: errw}
	var h hostStreams
	if !handOver {
		var err error
		if std.out, std.err, h.dups, err = pipedWriters(out, errw); err != nil {
			return stdio{}, hostStreams{}, err
		}
	}
	if _, isFile := in.(*os.File); in == nil || (isFile && handOver) {
		return std, h, nil
	}
	r, feed, err := newInputFeed(in)
	if err != nil {
		h.release()
		return stdio{}, hostStreams{}, err
	}
	std.in, h.feed = r, feed
	return std, h, nil
}

// pipedWriters wraps the writers that are files, duplicated. Stdout and
// stderr that are one open file (`> log 2>&1`) stay one writer, so that
// os/exec gives them one pipe and their lines keep their order.
func pipedWriters(out, errw io.Writer) (o, e io.Writer, dups []*os.File, err error) {
	of, outFile := out.(*os.File)
	ef, errFile := errw.(*os.File)
	wrap := func(f *os.File) io.Writer {
		if err != nil {
			return nil
		}
		var d *os.File
		if d, err = dupFile(f); err != nil {
			return nil
		}
		dups = append(dups, d)
		return hostWriter{d}
	}
	o, e = out, errw
	switch {
	case outFile && errFile && sameOpenFile(of, ef):
		o = wrap(of)
		e = o
	default:
		if outFile {
			o = wrap(of)
		}
		if errFile {
			e = wrap(ef)
		}
	}
	if err != nil {
		for _, d := range dups {
			d.Close()
		}
		return nil, nil, nil, fmt.Errorf("the workload's output: %w", err)
	}
	return o, e, dups, nil
}

// dupFile returns a new descriptor of f's open file, close-on-exec.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(u uintptr) { fd, derr = unix.FcntlInt(u, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// kcmpFile is KCMP_FILE of <linux/kcmp.h>.
const kcmpFile = 0

// sameOpenFile reports whether a and b are one open file description, as
// descriptors duplicated from each other are.
func sameOpenFile(a, b *os.File) bool {
	if a == b {
		return true
	}
	var same bool
	ac, err1 := a.SyscallConn()
	bc, err2 := b.SyscallConn()
	if err1 != nil || err2 != nil {
		return false
	}
	ac.Control(func(afd uintptr) {
		bc.Control(func(bfd uintptr) {
			pid := uintptr(os.Getpid())
			r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, afd, bfd, 0)
			same = errno == 0 && r == 0
		})
	})
	return same
}

// An inputFeed copies a caller's Stdin into the pipe a workload reads, and
// can be stopped once the workload is gone, so that a stdin that never
// ends (a terminal) holds up neither Wait nor a goroutine. A file is
// waited on with poll(2) beside a wake-up descriptor; any other reader
// cannot be interrupted, and its goroutine ends at its next Read, whose
// data has nowhere to go, as with os/exec.
type inputFeed struct {
	src io.Reader
	dst *os.File // the pipe's write end, or a terminal's master
	own bool     // dst is the feed's to close

	mu      sync.Mutex
	wake    int  // an eventfd that ends a poll for input; -1 once closed
	running bool // start has run
	stopped bool // stop has run
	done    chan struct{}
}

// newInputFeed returns a pipe's read end, for the workload, and the feed
// that fills it from src.
func newInputFeed(src io.Reader) (*os.File, *inputFeed, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	f, err := feedInto(w, src, true)
	if err != nil {
		r.Close()
		w.Close()
		return nil, nil, err
	}
	return r, f, nil
}

// feedInto returns a feed from src into dst, not yet started. A file is
// read through a duplicate of its own, which its caller may close.
func feedInto(dst *os.File, src io.Reader, own bool) (*inputFeed, error) {
	f := &inputFeed{src: src, dst: dst, own: own, wake: -1, done: make(chan struct{})}
	if file, ok := src.(*os.File); ok {
		dup, err := dupFile(file)
		if err != nil {
			return nil, err
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			dup.Close()
			return nil, err
		}
		f.src, f.wake = dup, fd
	}
	return f, nil
}

// start begins copying. It may be called on a nil feed.
func (f *inputFeed) start() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	go func() {
		defer close(f.done)
		if file, ok := f.src.(*os.File); ok {
			f.copyFile(file)
		} else {
			io.Copy(f.dst, f.src)
		}
		f.finish()
	}()
}

// finish closes what the feed owns once it has stopped copying.
func (f *inputFeed) finish() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.wake >= 0 {
		unix.Close(f.wake)
		f.wake = -1
		f.src.(*os.File).Close()
	}
	if f.own {
		f.dst.Close()
	}
}

// stop ends the feed: the workload has ended, or never started. A file's
// copying into a pipe has ended when it returns; another reader's ends at
// its next Read. A feed never started is released. It may be called more than
// once, and on a nil feed.
func (f *inputFeed) stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return
	}
	f.stopped = true
	running := f.running
	if !running {
		f.mu.Unlock()
		f.finish()
		return
	}
	if f.wake >= 0 {
		one := [8]byte{1}
		unix.Write(f.wake, one[:])
	}
	// Closing the write end makes a copy blocked on a full pipe return.
	if f.own {
		f.dst.Close()
	}
	_, isFile := f.src.(*os.File)
	f.mu.Unlock()
	// A terminal's master, not the feed's to close, could hold a write
	// up; it is closed with the rest of the sandbox, which ends the feed.
	if isFile && f.own {
		<-f.done
	}
}

// copyFile copies from a file until its end, an error, or stop. It waits
// for input with poll(2), beside the wake-up descriptor, rather than in
// read(2), which nothing could interrupt; it leaves the file's own flags
// alone, which the caller's other users of it share.
func (f *inputFeed) copyFile(src *os.File) {
	rc, err := src.SyscallConn()
	if err != nil {
		return
	}
	f.mu.Lock()
	wake := f.wake
	f.mu.Unlock()
	buf := make([]byte, 32<<10)
	for {
		var n int
		var stop bool
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
				if _, err := unix.Poll(fds, -1); err != nil {
					if err == unix.EINTR {
						continue
					}
					rerr = err
					return true
				}
				if fds[1].Revents != 0 {
					stop = true
					return true
				}
				n, rerr = unix.Read(int(fd), buf)
				if rerr == unix.EAGAIN || rerr == unix.EINTR {
					// Another reader of the file took the input.
					continue
				}
				return true
			}
		})
		if stop || err != nil || rerr != nil || n <= 0 {
			return
		}
		if _, err := f.dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// execOutputs are the outputs of a process that Exec adds to a sandbox.
// Unlike a sandbox's workload, whose PID namespace dies with it, an
// exec'd command can leave processes behind (`daemon &`) that keep its
// output open for as long as they run, and a hostile workload can reopen
// the pipe through /proc and hold it: copying until every writer has
// closed it, as os/exec does, would keep Exec waiting for them. So Exec's
// outputs are pipes of berth's own, copied until the process has ended
// and then only for what they still hold.
type execOutputs struct {
	copies []*outputCopy
}

// pipeOutputs replaces std's writers with the write ends of pipes whose
// copying finish ends. The process gets the write ends as files; close
// them (closeWriteEnds) once it has its own copies.
func pipeOutputs(std *stdio, handOver bool) (*execOutputs, error) {
	var outs execOutputs
	wrap := func(w io.Writer) (io.Writer, error) {
		if _, isFile := w.(*os.File); w == nil || (isFile && handOver) {
			return w, nil
		}
		c, err := newOutputCopy(w)
		if err != nil {
			return nil, err
		}
		outs.copies = append(outs.copies, c)
		return c.w, nil
	}
	same := sameWriter(std.out, std.err)
	var err error
	if std.out, err = wrap(std.out); err != nil {
		outs.finish()
		return nil, err
	}
	if same {
		std.err = std.out
	} else if std.err, err = wrap(std.err); err != nil {
		outs.finish()
		return nil, err
	}
	return &outs, nil
}

// closeWriteEnds closes the host's copies of the pipes' write ends.
func (o *execOutputs) closeWriteEnds() {
	for _, c := range o.copies {
		c.w.Close()
	}
}

// finish, once the process has ended, copies what the pipes still hold
// and stops copying.
func (o *execOutputs) finish() {
	for _, c := range o.copies {
		c.finish()
	}
}

// An outputCopy copies a pipe into a caller's writer.
type outputCopy struct {
	r, w *os.File
	dst  io.Writer
	done chan struct{}
	buf  []byte
}

func newOutputCopy(dst io.Writer) (*outputCopy, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("the process's output: %w", err)
	}
	c := &outputCopy{r: r, w: w, dst: dst, done: make(chan struct{}), buf: make([]byte, 32<<10)}
	go func() {
		defer close(c.done)
		for {
			n, err := r.Read(c.buf)
			if n > 0 {
				if _, werr := dst.Write(c.buf[:n]); werr != nil {
					// The writer is gone: the process gets EPIPE
					// rather than a full pipe.
					r.Close()
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return c, nil
}

// maxDrain bounds what finish reads after the process has ended: what a
// pipe can hold, and then some, but not without end from a writer that
// goes on writing.
const maxDrain = 1 << 20

// finish stops the copying goroutine's wait (a deadline ends a blocked
// Read without losing data), reads what the pipe holds now without
// waiting for more, and closes it.
func (c *outputCopy) finish() {
	c.w.Close()
	c.r.SetReadDeadline(time.Now())
	<-c.done
	// A passed deadline would refuse the reads below before trying.
	c.r.SetReadDeadline(time.Time{})
	if rc, err := c.r.SyscallConn(); err == nil {
		for drained := 0; drained < maxDrain; {
			n := 0
			rerr := rc.Read(func(fd uintptr) bool {
				n, _ = unix.Read(int(fd), c.buf)
				return true // never wait: only what is there already
			})
			if rerr != nil || n <= 0 {
				break
			}
			drained += n
			if _, err := c.dst.Write(c.buf[:n]); err != nil {
				break
			}
		}
	}
	c.r.Close()
}
