package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/sandbox"
)

// workloadFlags are `berth run`'s flags for what runs and what it is
// known by: --entrypoint, --label, --label-file and --stop-timeout.
type workloadFlags struct {
	entrypoint  string
	labels      []string
	labelFiles  []string
	stopTimeout int
}

func (f *workloadFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.entrypoint, "entrypoint", "", `run this program instead of the image's entrypoint, with COMMAND [ARG...] as its arguments (the image's Cmd is dropped); --entrypoint "" clears it, so that COMMAND, or the image's Cmd, runs alone`)
	cmd.Flags().StringArrayVarP(&f.labels, "label", "l", nil, "set a label on the sandbox: KEY=VALUE, or KEY for an empty value")
	cmd.Flags().StringArrayVar(&f.labelFiles, "label-file", nil, "read labels from a file: KEY=VALUE lines, # comments (--label wins over it)")
	cmd.Flags().IntVar(&f.stopTimeout, "stop-timeout", 0, "seconds between SIGTERM and SIGKILL when --timeout runs out (default 0: SIGKILL at once), and, with -d, berth stop's default grace")
}

// apply sets in opts what the flags say.
func (f *workloadFlags) apply(cmd *cobra.Command, opts *sandbox.Options) error {
	if cmd.Flags().Changed("entrypoint") {
		// One program, as Docker's: its arguments are COMMAND's.
		opts.Entrypoint = []string{}
		if f.entrypoint != "" {
			opts.Entrypoint = []string{f.entrypoint}
		}
	}

	labels := map[string]string{}
	for _, name := range f.labelFiles {
		lines, err := readKeyValueFile("--label-file", name)
		if err != nil {
			return err
		}
		for _, l := range lines {
			labels[l.key] = l.value
		}
	}
	for _, kv := range f.labels {
		k, v, _ := strings.Cut(kv, "=")
		if err := checkKey(k); err != nil {
			return invalidFlag("--label %s: %w", clip.Quote(kv), err)
		}
		labels[k] = v
	}
	if len(labels) > 0 {
		opts.Labels = labels
	}

	grace, err := graceSeconds("--stop-timeout", f.stopTimeout)
	if err != nil {
		return err
	}
	opts.Grace = grace
	return nil
}

// graceSeconds checks a grace given in seconds by flag: more seconds than
// a time.Duration holds would wrap round, to a negative grace or a far
// shorter one than asked.
func graceSeconds(flag string, seconds int) (time.Duration, error) {
	if maxSeconds := int(math.MaxInt64 / int64(time.Second)); seconds < 0 || seconds > maxSeconds {
		return 0, invalidFlag("%s %d: want a number of seconds, 0 to %d", flag, seconds, maxSeconds)
	}
	return time.Duration(seconds) * time.Second, nil
}

// readEnvFiles reads the variables of --env-file files, in order.
func readEnvFiles(names []string) ([]string, error) {
	var env []string
	for _, name := range names {
		lines, err := readKeyValueFile("--env-file", name)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if !l.hasValue {
				v, ok := os.LookupEnv(l.key)
				if !ok {
					continue // as -e KEY: left out when the host has none
				}
				l.value = v
			}
			env = append(env, l.key+"="+l.value)
		}
	}
	return env, nil
}

// maxKeyValueFile bounds what --env-file and --label-file read: an
// environment larger than the kernel takes for a program (about 2 MiB
// with an 8 MiB stack) is no use, and a file such as /dev/zero must not
// be read for ever.
const maxKeyValueFile = 1 << 20

// A keyValue is one line of an --env-file or --label-file.
type keyValue struct {
	key, value string
	hasValue   bool // "KEY" alone has none
}

// readKeyValueFile reads a file in Docker's --env-file format: one
// KEY=VALUE per line, the value taken as it is (no quotes, no $
// expansion, spaces kept), KEY alone for a value taken elsewhere; blank
// lines and lines starting with # skipped, leading white space ignored,
// and a CR ending a line dropped. Errors name the flag, the file and the
// line.
func readKeyValueFile(flag, name string) ([]keyValue, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, invalidFlag("%s: %w", flag, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyValueFile+1))
	if err != nil {
		return nil, invalidFlag("%s %s: %w", flag, clip.Quote(name), err)
	}
	if len(data) > maxKeyValueFile {
		return nil, invalidFlag("%s %s: larger than %d KiB", flag, clip.Quote(name), maxKeyValueFile>>10)
	}
	var out []keyValue
	lines := bufio.NewScanner(bytes.NewReader(data))
	lines.Buffer(nil, maxKeyValueFile+1)
	for n := 1; lines.Scan(); n++ {
		line := strings.TrimSuffix(lines.Text(), "\r")
		bad := func(format string, args ...any) error {
			return invalidFlag("%s %s, line %d: %s", flag, clip.Quote(name), n, fmt.Sprintf(format, args...))
		}
		if !utf8.ValidString(line) {
			return nil, bad("not UTF-8 text")
		}
		if strings.IndexByte(line, 0) >= 0 {
			return nil, bad("a NUL byte")
		}
		line = strings.TrimLeftFunc(line, unicode.IsSpace)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, hasValue := strings.Cut(line, "=")
		if err := checkKey(k); err != nil {
			return nil, bad("%v", err)
		}
		out = append(out, keyValue{key: k, value: v, hasValue: hasValue})
	}
	if err := lines.Err(); err != nil {
		return nil, invalidFlag("%s %s: %w", flag, clip.Quote(name), err)
	}
	return out, nil
}

// checkKey checks a variable's or a label's name: not empty, and without
// white space or control characters, which Docker refuses too, and which
// in a label would let one line of a listing pass for two.
func checkKey(k string) error {
	switch {
	case k == "":
		return fmt.Errorf("no name before the =")
	case strings.IndexFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("name %s has white space or a control character", clip.Quote(k))
	}
	return nil
}
