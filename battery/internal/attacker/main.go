// Command attacker is the battery's hostile workload. It runs inside a
// sandbox, tries the attack its first argument names with raw system
// calls, and prints a Verdict as one JSON line on standard error.
//
// Arguments after the case name are key=value pairs the host side chose
// (a device's numbers, a marker to forge, an address to spoof).
//
// It is built statically (CGO_ENABLED=0) so that it runs in any image.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Verdict is what the attacker reports. Succeeded means the attack did
// what it set out to do; Errno is the error that stopped it, by name.
type Verdict struct {
	Case      string `json:"case"`
	Attempted bool   `json:"attempted"`
	Succeeded bool   `json:"succeeded"`
	Errno     string `json:"errno,omitempty"`
	Step      string `json:"step,omitempty"`
	Detail    string `json:"detail,omitempty"`
	// Count is a case's measure: forks made, bytes written, instances
	// created.
	Count int64 `json:"count,omitempty"`
}

// args are the key=value arguments of a case.
type args map[string]string

func (a args) str(k string) string { return a[k] }

func (a args) int(k string) int64 {
	n, err := strconv.ParseInt(a[k], 0, 64)
	if err != nil {
		fatalf("argument %s=%q: %v", k, a[k], err)
	}
	return n
}

type attack func(a args) Verdict

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: attacker CASE [key=value...]")
	}
	name := os.Args[1]
	fn, ok := attacks[name]
	if !ok {
		names := make([]string, 0, len(attacks))
		for n := range attacks {
			names = append(names, n)
		}
		sort.Strings(names)
		fatalf("unknown case %q; known: %s", name, strings.Join(names, " "))
	}
	a := args{}
	for _, kv := range os.Args[2:] {
		k, v, _ := strings.Cut(kv, "=")
		a[k] = v
	}
	v := fn(a)
	v.Case = name
	report(v)
	if a["hold"] == "1" {
		// The host looks at the effect while the attacker is still
		// there: a bridge forgets a port's MACs when the port goes.
		for {
			unix.Pause()
		}
	}
}

// report prints v on standard error, where the host looks for it: the
// cases about standard output give that to a host file.
func report(v Verdict) {
	b, _ := json.Marshal(v)
	os.Stderr.Write(append(b, '\n'))
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "attacker: "+format+"\n", a...)
	os.Exit(2)
}

// refused is the verdict of an attack stopped at step by err.
func refused(step string, err error) Verdict {
	return Verdict{Attempted: true, Step: step, Errno: errnoName(err), Detail: errString(err)}
}

// worked is the verdict of an attack that did what it set out to.
func worked(detail string) Verdict {
	return Verdict{Attempted: true, Succeeded: true, Detail: detail}
}

// opened is the verdict of the cases where opening p with flags at all
// is the hole: refused at step if the open fails, else worked, the
// descriptor closed at once. how says for what it was opened.
func opened(p string, flags int, step, how string) Verdict {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return refused(step, err)
	}
	unix.Close(fd)
	return worked("opened " + p + how)
}

// notAttempted is the verdict when the attack could not even be tried:
// the host must treat it as a failure of the case, not a refusal.
func notAttempted(detail string) Verdict {
	return Verdict{Detail: detail}
}

func errnoName(err error) string {
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return strconv.Itoa(int(e))
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

var attacks = map[string]attack{}

// register adds cases; each file of the attacker registers its own.
func register(m map[string]attack) {
	for k, v := range m {
		if _, dup := attacks[k]; dup {
			panic("duplicate case " + k)
		}
		attacks[k] = v
	}
}

func init() {
	register(map[string]attack{
		// noop is the program Exec runs in the host-tools cases.
		"noop": func(args) Verdict { return Verdict{Attempted: true, Detail: "noop"} },
	})
}
