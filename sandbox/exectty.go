package sandbox

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// A TerminalSize is the size of a terminal, in characters.
type TerminalSize struct {
	Rows, Cols uint16
}

// consoleSocket returns the two ends of the socket over which an init or
// exec helper sends the master side of the terminal it makes: ours, and
// the one the helper gets as fd 5.
func consoleSocket() (ours, theirs *os.File, err error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("console socket: %w", err)
	}
	return os.NewFile(uintptr(pair[0]), "console"), os.NewFile(uintptr(pair[1]), "console"), nil
}

// An execTerminal copies an exec'd process's terminal to the caller's
// writer, feeds it the caller's input and applies the caller's sizes.
// Like execOutputs, it copies until the process has ended and then only
// what the terminal still holds: a process the exec'd one left behind
// (`daemon &`) keeps the terminal open for as long as it runs, and Exec
// must not wait for it.
type execTerminal struct {
	master *os.File // non-blocking, so that a deadline can end a Read
	dst    io.Writer
	feed   *inputFeed
	done   chan struct{} // the copying has stopped
	stop   chan struct{} // closed by finish: the resizing stops
	buf    []byte
}

// attachExecTerminal receives the terminal's master from the helper over
// console and starts copying.
func attachExecTerminal(console *os.File, o *ExecOptions) (*execTerminal, error) {
	received, err := receiveFD(console)
	if err != nil {
		return nil, fmt.Errorf("receive the process's terminal: %w", err)
	}
	// A fresh descriptor, non-blocking before os.NewFile sees it, so
	// that the runtime's poller owns it and deadlines work.
	fd, err := unix.FcntlInt(received.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	received.Close()
	if err != nil {
		return nil, fmt.Errorf("the process's terminal: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("the process's terminal: %w", err)
	}
	t := &execTerminal{master: os.NewFile(uintptr(fd), "pty"), dst: o.Stdout, done: make(chan struct{}), stop: make(chan struct{}), buf: make([]byte, 32<<10)}
	if t.dst == nil {
		t.dst = io.Discard
	}
	if o.Stdin != nil {
		if t.feed, err = feedInto(t.master, o.Stdin, false); err != nil {
			t.master.Close()
			return nil, fmt.Errorf("the terminal's input: %w", err)
		}
		t.feed.start()
	}
	go func() {
		defer close(t.done)
		for {
			n, err := t.master.Read(t.buf)
			if n > 0 {
				if _, werr := t.dst.Write(t.buf[:n]); werr != nil {
					return
				}
			}
			// EIO once no process holds the terminal any more.
			if err != nil {
				return
			}
		}
	}()
	if o.Resize != nil {
		go func() {
			for {
				select {
				case size, ok := <-o.Resize:
					if !ok {
						return
					}
					unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: size.Rows, Col: size.Cols})
				case <-t.stop:
					return
				}
			}
		}()
	}
	return t, nil
}

// finish, once the process has ended, copies what the terminal still
// holds (up to maxDrain), stops the input and the resizing, and closes
// the master.
func (t *execTerminal) finish() {
	close(t.stop)
	t.feed.stop()
	t.master.SetReadDeadline(time.Now())
	<-t.done
	t.master.SetReadDeadline(time.Time{})
	if rc, err := t.master.SyscallConn(); err == nil {
		for drained := 0; drained < maxDrain; {
			n := 0
			rerr := rc.Read(func(fd uintptr) bool {
				n, _ = unix.Read(int(fd), t.buf)
				return true // only what is there already
			})
			if rerr != nil || n <= 0 {
				break
			}
			drained += n
			if _, err := t.dst.Write(t.buf[:n]); err != nil {
				break
			}
		}
	}
	t.master.Close()
}
