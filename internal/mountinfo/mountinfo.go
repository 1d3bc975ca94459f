// Package mountinfo reads the mount points of the calling process's mount
// namespace from /proc/self/mountinfo. berth's store, its plugin host and
// the plugin conformance kit each need "what is mounted at or below this
// directory", to unmount it or to check that nothing is left.
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Under returns the mount points at dir or below it, for any of dirs, in
// the order mountinfo lists them: a mount comes after the one it sits on.
// The paths are unescaped and compared as given (callers resolve links
// first if they must); an empty dir matches nothing.
func Under(dirs ...string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// Fields: id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := Unescape(fields[4])
		for _, d := range dirs {
			if d != "" && within(mp, d) {
				out = append(out, mp)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	return out, nil
}

func within(p, dir string) bool {
	dir = filepath.Clean(dir)
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// Unescape undoes the octal escapes (\040 for a space, \011 for a tab,
// \012 for a newline, \134 for a backslash) the kernel writes in
// mountinfo's paths.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }
