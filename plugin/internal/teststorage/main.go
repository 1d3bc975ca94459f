// Command teststorage is the storage plugin plugin's tests run: an honest
// one by default, and a liar when a Prepare's "mode" option asks, so that
// the tests can show berth refusing each kind of bad answer.
//
// Its root is the directory "root" beside the binary. Built under a name
// containing "rootslash", it announces "/" as its root instead; under one
// containing "nodiff", it does not serve Diff; under one containing
// "shifter", it announces that it shifts owners itself (and does not).
// The Diff of a key containing "evildiff" is a tar with a "../" name.
package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/plugin"
)

func main() {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := &storage{root: filepath.Join(filepath.Dir(exe), "root")}
	if strings.Contains(filepath.Base(exe), "rootslash") {
		s.announce = "/"
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if strings.Contains(filepath.Base(exe), "nodiff") {
		plugin.ServeStorage(noDiff{s})
		return
	}
	if strings.Contains(filepath.Base(exe), "shifter") {
		plugin.ServeStorage(shifter{s})
		return
	}
	plugin.ServeStorage(s)
}

// shifter is the storage claiming capability idmap.
type shifter struct{ *storage }

func (shifter) ShiftsOwners() bool { return true }

// noDiff is the storage without its Diff method.
type noDiff struct{ s *storage }

func (n noDiff) Roots() []string { return n.s.Roots() }
func (n noDiff) Prepare(ctx context.Context, req *plugin.PrepareRequest) (*plugin.PrepareResult, error) {
	return n.s.Prepare(ctx, req)
}
func (n noDiff) Release(ctx context.Context, key string) error { return n.s.Release(ctx, key) }
func (n noDiff) List(ctx context.Context) ([]string, error)    { return n.s.List(ctx) }

type storage struct {
	root     string
	announce string // a root to announce instead of root
	mu       sync.Mutex
}

func (s *storage) Roots() []string {
	if s.announce != "" {
		return []string{s.announce}
	}
	return []string{s.root}
}

func (s *storage) EnforcesQuota() bool { return false }

// Prepare makes root/<key> with upper, work and rootfs directories and
// answers as its mode says.
func (s *storage) Prepare(ctx context.Context, req *plugin.PrepareRequest) (*plugin.PrepareResult, error) {
	dir := filepath.Join(s.root, req.Key)
	s.mu.Lock()
	err := os.Mkdir(dir, 0o755)
	s.mu.Unlock()
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("rootfs %s: %w", req.Key, plugin.ErrExists)
	}
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"upper", "work", "rootfs", "rootfs/sub"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "rootfs", "marker"), []byte(req.Key), 0o644); err != nil {
		return nil, err
	}
	lowers := make([]string, 0, len(req.Layers))
	for _, l := range slices.Backward(req.Layers) {
		lowers = append(lowers, l.UnpackedPath)
	}
	overlay := plugin.Mount{Type: "overlay", IDMap: true, Options: []string{
		"lowerdir=" + strings.Join(lowers, ":"),
		"upperdir=" + filepath.Join(dir, "upper"), "workdir=" + filepath.Join(dir, "work")}}
	bind := plugin.Mount{Type: "bind", Source: filepath.Join(dir, "rootfs"), IDMap: true}
	one := func(m plugin.Mount) *plugin.PrepareResult {
		return &plugin.PrepareResult{Mounts: []plugin.Mount{m}, Driver: "test"}
	}

	// The mode is the "mode" option, else what the key starts with
	// before "--", so that one plugin process can be asked for several.
	mode := req.Options["mode"]
	if m, _, ok := strings.Cut(req.Key, "--"); ok && mode == "" {
		mode = m
	}
	switch mode {
	case "", "overlay":
		return one(overlay), nil
	case "bind":
		return one(bind), nil
	case "bind-noidmap":
		bind.IDMap = false
		return one(bind), nil
	case "hang":
		if err := os.WriteFile(filepath.Join(s.root, "hanging"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return nil, err
		}
		<-ctx.Done()
		return nil, ctx.Err()
	case "fail":
		return nil, fmt.Errorf("prepare %s: told to fail", req.Key)
	case "exists":
		return nil, fmt.Errorf("rootfs %s: %w", req.Key, plugin.ErrExists)
	default:
		m, ok := lies(dir)[mode]
		if !ok {
			return nil, fmt.Errorf("unknown mode %q: %w", mode, plugin.ErrInvalid)
		}
		if mode == "symlink-source" || mode == "symlink-target" {
			// What a workload writing under the root could plant.
			if err := os.Symlink("/etc", filepath.Join(dir, "rootfs", "link")); err != nil {
				return nil, err
			}
		}
		if mode == "many" {
			return &plugin.PrepareResult{Mounts: m}, nil
		}
		return &plugin.PrepareResult{Mounts: append([]plugin.Mount{bind}, m...)}, nil
	}
}

// lies are the bad answers, by mode: mounts after a first, honest bind
// of dir/rootfs (or, for "many", the whole answer). A lie in the first
// mount is made by a mode starting with "root-".
func lies(dir string) map[string][]plugin.Mount {
	bind := func(src, target string, opts ...string) []plugin.Mount {
		return []plugin.Mount{{Type: "bind", Source: src, Target: target, Options: opts}}
	}
	many := make([]plugin.Mount, 1000)
	for i := range many {
		many[i] = plugin.Mount{Type: "tmpfs", Target: "sub"}
	}
	many[0] = plugin.Mount{Type: "bind", Source: filepath.Join(dir, "rootfs")}
	return map[string][]plugin.Mount{
		"outside":        bind("/etc", "sub"),
		"relative":       bind("rootfs", "sub"),
		"dotdot":         bind(dir+"/../../../../../../../etc", "sub"),
		"denied":         bind("/proc/self", "sub"),
		"symlink-source": bind(filepath.Join(dir, "rootfs", "link"), "sub"),
		"symlink-target": {{Type: "tmpfs", Target: "link"}},
		"target-dotdot":  {{Type: "tmpfs", Target: "../sub"}},
		"target-abs":     {{Type: "tmpfs", Target: "/etc"}},
		"target-root":    {{Type: "tmpfs", Target: ""}},
		"type-ext4":      {{Type: "ext4", Source: "/dev/sda1", Target: "sub"}},
		"type-proc":      {{Type: "proc", Source: "proc", Target: "sub"}},
		"type-sysfs":     {{Type: "sysfs", Source: "sysfs", Target: "sub"}},
		"opt-suid":       bind(filepath.Join(dir, "upper"), "sub", "suid"),
		"opt-dev":        bind(filepath.Join(dir, "upper"), "sub", "dev"),
		"opt-rbind":      bind(filepath.Join(dir, "upper"), "sub", "rbind"),
		"tmpfs-uid":      {{Type: "tmpfs", Target: "sub", Options: []string{"uid=0"}}},
		"tmpfs-mode":     {{Type: "tmpfs", Target: "sub", Options: []string{"mode=4777"}}},
		"lowerdir-plus":  {{Type: "overlay", Target: "sub", Options: []string{"lowerdir=" + dir + "/upper", "lowerdir+=/etc"}}},
		"datadir-plus":   {{Type: "overlay", Target: "sub", Options: []string{"lowerdir=" + dir + "/upper", "datadir+=/etc"}}},
		"lower-outside":  {{Type: "overlay", Target: "sub", Options: []string{"lowerdir=/etc"}}},
		"upper-outside":  {{Type: "overlay", Target: "sub", Options: []string{"lowerdir=" + dir + "/rootfs", "upperdir=/tmp", "workdir=" + dir + "/work"}}},
		"metacopy":       {{Type: "overlay", Target: "sub", Options: []string{"lowerdir=" + dir + "/rootfs", "metacopy=on"}}},
		"many":           many,
	}
}

func (s *storage) Release(ctx context.Context, key string) error {
	dir := filepath.Join(s.root, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Lstat(dir); err != nil {
		return fmt.Errorf("rootfs %s: %w", key, plugin.ErrNotFound)
	}
	return os.RemoveAll(dir)
}

func (s *storage) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range entries {
		if e.IsDir() {
			keys = append(keys, e.Name())
		}
	}
	return keys, nil
}

// Diff writes the upper directory as an OCI layer tar: directories and
// regular files as they are, overlay whiteouts (0/0 character devices) as
// .wh. files, and opaque directories with a .wh..wh..opq in them.
func (s *storage) Diff(ctx context.Context, key string, w io.Writer) error {
	upper := filepath.Join(s.root, key, "upper")
	if _, err := os.Lstat(upper); err != nil {
		return fmt.Errorf("rootfs %s: %w", key, plugin.ErrNotFound)
	}
	tw := tar.NewWriter(w)
	if strings.Contains(key, "evildiff") {
		// A hostile plugin's diff: an entry that climbs out of the
		// layer berth unpacks it into.
		body := "escaped " + key
		if err := tw.WriteHeader(&tar.Header{Name: "../../../../../escape", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return err
		}
		return tw.Close()
	}
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == upper {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			if st.Rdev != 0 {
				return fmt.Errorf("%s: a device", rel)
			}
			return tw.WriteHeader(&tar.Header{Name: filepath.Join(filepath.Dir(rel), ".wh."+filepath.Base(rel)), Typeflag: tar.TypeReg})
		case unix.S_IFDIR:
			if err := tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: int64(st.Mode & 0o7777)}); err != nil {
				return err
			}
			if isOpaque(p) {
				return tw.WriteHeader(&tar.Header{Name: filepath.Join(rel, ".wh..wh..opq"), Typeflag: tar.TypeReg})
			}
			return nil
		case unix.S_IFREG:
			if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: int64(st.Mode & 0o7777), Size: st.Size}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil // the test plugin leaves out links and the like
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// isOpaque reports whether overlayfs marked the directory p opaque.
func isOpaque(p string) bool {
	v := make([]byte, 1)
	n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", v)
	return err == nil && n == 1 && v[0] == 'y'
}
