package sandbox

import (
	"errors"
	"fmt"
)

// SuperviseConfig says where a supervisor keeps a sandbox's output and
// exit status, and what it runs once the workload has ended.
type SuperviseConfig struct {
	// Log is the file the workload's output goes to, one line per entry
	// in the format ReadLog reads; it is created if need be (0600) and
	// appended to. Its directory must exist and belong to the host.
	Log string
	// LogMaxBytes bounds the log: past it, the file is renamed to
	// Log+".1" (replacing the previous one) and a new one begun, so a
	// sandbox never holds more than about twice this on the host's disk.
	// 0 means DefaultLogMaxBytes.
	LogMaxBytes int64
	// Exit is the file the workload's end is written to, atomically, as
	// JSON (ExitStatus), before Then runs.
	Exit string
	// Then is the program the supervisor becomes (execve) once the
	// workload has ended and its output is in the log: Then[0] must be
	// an absolute path (os.Executable() for the host program itself),
	// the rest its arguments. It inherits the sandbox's ownership: the
	// owner lock stays held until it exits, so Recover does not race it
	// for the teardown. Empty means exit.
	Then []string
}

// DefaultLogMaxBytes is SuperviseConfig.LogMaxBytes's default.
const DefaultLogMaxBytes = 16 << 20

// ExitStatus is what SuperviseConfig.Exit holds.
type ExitStatus struct {
	ExitCode int    `json:"exitCode"`         // the exit status, or 128+signal
	Signal   int    `json:"signal,omitempty"` // the signal that ended it, if one did
	Exited   string `json:"exited"`           // RFC 3339 with nanoseconds
}

// Supervise replaces the calling process (execve) with berth's
// supervisor: a small C program, no Go runtime, that holds a started
// Detachable sandbox's output pipes and its PID 1, copies the output to
// cfg.Log, and records how the workload ended in cfg.Exit. It is how a
// sandbox outlives the command that started it: fork a process (with
// Setsid) that starts the sandbox and calls Supervise. It returns only
// on failure, with the sandbox still this process's. The process must
// have nothing else to do: every goroutine and thread ends with the
// exec.
func (s *Sandbox) Supervise(cfg *SuperviseConfig) error {
	return fmt.Errorf("Supervise: %w", errors.ErrUnsupported) // issue 14: supervise branch
}
