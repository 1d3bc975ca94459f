package plugin

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/clip"
)

// A storage plugin is a root process on the host, but its answers are not
// taken on trust: a buggy plugin, or a hostile workload whose writable
// layer sits under the plugin's roots and plants symlinks there, must not
// get berth to mount the host's files into a sandbox or to mount them with
// set-id programs or device nodes working. checkMounts turns a plugin's
// answer into mounts berth is willing to perform, and says which rule an
// answer breaks otherwise. The rules on paths are about their text; the
// mounts themselves are performed from descriptors opened without
// following any symlink (see mounts.go), so that the text is what is
// mounted.

// Bounds on an answer, so that a plugin cannot make berth do unbounded
// work or hold unbounded state.
const (
	maxMounts       = 64   // mounts in one answer
	maxMountOptions = 64   // options of one mount
	maxOptionBytes  = 4096 // one option, and one path
	maxLowerDirs    = 500  // overlay lower directories (overlayfs's own limit)
	maxRoots        = 16   // roots one plugin announces
	maxDriverName   = 64   // PrepareResult.Driver
)

// deniedDirs are kernel and berth directories that no plugin root may be
// in and no mount source may name, whatever the roots say: a bind of
// /proc or of berth's own state would give a sandbox the host. The store's
// root and berth's mount and socket directories join them (see
// OpenStorage).
var deniedDirs = []string{"/proc", "/sys", "/dev", "/run/berth"}

// storePluginsDir, in the store, is for plugins' own state: the one part
// of the store a plugin's root may be in. The store itself never uses it.
const storePluginsDir = "plugins"

// forbidden are the directories of deniedDirs and the like, but for the
// exceptions in them.
type forbidden struct {
	dirs, except []string
}

// of returns the forbidden directory p is in, if any.
func (f forbidden) of(p string) string {
	for _, e := range f.except {
		if within(p, e) {
			return ""
		}
	}
	for _, d := range f.dirs {
		if within(p, d) {
			return d
		}
	}
	return ""
}

// under returns a forbidden directory below p, if any: a mount of p,
// even one that leaves out the mounts below it, shows what is in that
// directory on p's filesystem (/run holds /run/berth, /var/lib the store).
func (f forbidden) under(p string) string {
	for _, d := range f.dirs {
		if d != p && within(d, p) {
			return d
		}
	}
	return ""
}

// mountRules is what an answer is checked against.
type mountRules struct {
	roots  []string        // the plugin's, checked by checkRoots
	layers map[string]bool // the request's layer UnpackedPaths
	denied forbidden       // deniedDirs, berth's mount dir, the store...
}

// A checkedMount is a mount from a plugin's answer that passed the rules,
// in the form performMount wants.
type checkedMount struct {
	typ    string // "bind", "overlay" or "tmpfs"
	target string // "" for the rootfs, else clean and relative
	source string // bind
	attrs  uint64 // unix.MOUNT_ATTR_*, nosuid and nodev always among them
	idmap  bool

	lowers      []string // overlay, top first
	upper, work string   // overlay; both or neither
	fsOptions   [][2]string
}

// refusal is the error for an answer that breaks a rule.
func refusal(i int, m *Mount, format string, args ...any) error {
	return fmt.Errorf("mount %d (%s on %s): %s: %w", i, clip.Quote(m.Type), clip.Quote(m.Target), fmt.Sprintf(format, args...), ErrRefused)
}

// checkRoots checks the roots a plugin announced: each an absolute, clean
// directory that is not "/", and neither in nor above a denied directory.
func checkRoots(roots []string, denied forbidden) error {
	if len(roots) == 0 {
		return fmt.Errorf("the plugin announces no roots: %w", ErrRefused)
	}
	if len(roots) > maxRoots {
		return fmt.Errorf("the plugin announces %d roots, more than %d: %w", len(roots), maxRoots, ErrRefused)
	}
	for _, r := range roots {
		if err := checkPathText(r); err != nil {
			return fmt.Errorf("root %s: %s: %w", clip.Quote(r), err, ErrRefused)
		}
		if r == "/" {
			return fmt.Errorf("root \"/\": a root must not be the whole host: %w", ErrRefused)
		}
		if d := denied.of(r); d != "" {
			return fmt.Errorf("root %s: in %s, which is the kernel's or berth's: %w", clip.Quote(r), d, ErrRefused)
		}
		if d := denied.under(r); d != "" {
			return fmt.Errorf("root %s: holds %s, which is the kernel's or berth's: %w", clip.Quote(r), d, ErrRefused)
		}
	}
	return nil
}

// checkPathText checks that p is an absolute, clean path of bounded length
// without characters that mount option strings give a meaning to.
func checkPathText(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case len(p) > maxOptionBytes:
		return fmt.Errorf("path longer than %d bytes", maxOptionBytes)
	case !filepath.IsAbs(p):
		return fmt.Errorf("not an absolute path")
	case filepath.Clean(p) != p:
		return fmt.Errorf("not a clean path (., .., a doubled or a trailing slash)")
	case strings.ContainsAny(p, ",:\\"):
		return fmt.Errorf(`path holds one of , : \ which mount options give a meaning to`)
	case !utf8.ValidString(p) || strings.IndexFunc(p, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("path holds a control character or is not UTF-8")
	}
	return nil
}

// within reports whether p is dir or in it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// checkSource checks a path an answer wants mounted (a bind's source, an
// overlay's directories): absolute and clean, under one of the roots or,
// if layerOK, exactly one of the request's layer directories, and neither
// in nor above a denied directory.
func (r *mountRules) checkSource(what, p string, layerOK bool) error {
	if err := checkPathText(p); err != nil {
		return fmt.Errorf("%s %s: %s", what, clip.Quote(p), err)
	}
	if layerOK && r.layers[p] {
		return nil
	}
	if d := r.denied.of(p); d != "" {
		return fmt.Errorf("%s %s is in %s, which is the kernel's or berth's", what, clip.Quote(p), d)
	}
	if d := r.denied.under(p); d != "" {
		return fmt.Errorf("%s %s holds %s, which is the kernel's or berth's", what, clip.Quote(p), d)
	}
	for _, root := range r.roots {
		if within(p, root) {
			return nil
		}
	}
	if layerOK {
		return fmt.Errorf("%s %s is neither under the plugin's roots %v nor one of the request's layers", what, clip.Quote(p), r.roots)
	}
	return fmt.Errorf("%s %s is not under the plugin's roots %v", what, clip.Quote(p), r.roots)
}

// checkTarget checks a mount's target: "" for the first mount only, else a
// clean relative path without "..".
func checkTarget(i int, t string) error {
	if i == 0 {
		if t != "" {
			return fmt.Errorf("the first mount must be the rootfs itself, target \"\"")
		}
		return nil
	}
	switch {
	case t == "":
		return fmt.Errorf("only the first mount may be the rootfs itself")
	case len(t) > maxOptionBytes:
		return fmt.Errorf("target longer than %d bytes", maxOptionBytes)
	case filepath.IsAbs(t):
		return fmt.Errorf("target is absolute; it must be relative to the rootfs")
	case filepath.Clean(t) != t:
		return fmt.Errorf("target is not a clean path")
	case t == ".." || strings.HasPrefix(t, "../"):
		return fmt.Errorf("target leaves the rootfs with ..")
	case !utf8.ValidString(t) || strings.IndexFunc(t, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("target holds a control character or is not UTF-8")
	}
	return nil
}

// commonAttrs are the options any type of mount may have, as mount
// attributes. Nothing may turn on set-id programs or device nodes: the
// attributes always include nosuid and nodev. exec stays allowed, since
// a rootfs holds the programs the sandbox runs.
var commonAttrs = map[string]uint64{
	"ro":          unix.MOUNT_ATTR_RDONLY,
	"rw":          0,
	"nosuid":      0,
	"nodev":       0,
	"exec":        0,
	"noexec":      unix.MOUNT_ATTR_NOEXEC,
	"noatime":     unix.MOUNT_ATTR_NOATIME,
	"relatime":    unix.MOUNT_ATTR_RELATIME,
	"nodiratime":  unix.MOUNT_ATTR_NODIRATIME,
	"strictatime": unix.MOUNT_ATTR_STRICTATIME,
}

// overlayValues are the overlay options with a value that berth passes on,
// and the values allowed. Anything that could bring a path in
// ("lowerdir+", "datadir+", a second upperdir) or make overlayfs follow
// what a layer's xattrs say (redirect_dir=on or follow, metacopy=on) is
// refused, as is any option not listed.
var overlayValues = map[string][]string{
	"redirect_dir": {"off", "nofollow"},
	"metacopy":     {"off"},
	"index":        {"off"},
	"xino":         {"off", "auto", "on"},
}

// overlayDefaults are set unless the answer sets them, whatever the
// kernel's configured defaults: lower layers (the store's, shared by every
// sandbox of an image) are then never interpreted beyond plain whiteouts.
var overlayDefaults = [][2]string{{"redirect_dir", "off"}, {"metacopy", "off"}, {"index", "off"}}

// checkMounts checks a plugin's answer against r.
func (r *mountRules) checkMounts(ms []Mount) ([]checkedMount, error) {
	if len(ms) == 0 {
		return nil, fmt.Errorf("no mounts: %w", ErrRefused)
	}
	if len(ms) > maxMounts {
		return nil, fmt.Errorf("%d mounts, more than %d: %w", len(ms), maxMounts, ErrRefused)
	}
	out := make([]checkedMount, 0, len(ms))
	for i := range ms {
		c, err := r.checkMount(i, &ms[i])
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (r *mountRules) checkMount(i int, m *Mount) (checkedMount, error) {
	c := checkedMount{typ: m.Type, target: m.Target, idmap: m.IDMap,
		attrs: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := checkTarget(i, m.Target); err != nil {
		return c, refusal(i, m, "%s", err)
	}
	if len(m.Options) > maxMountOptions {
		return c, refusal(i, m, "%d options, more than %d", len(m.Options), maxMountOptions)
	}
	var rest []string // the type's own options
	for _, o := range m.Options {
		if len(o) > maxOptionBytes {
			return c, refusal(i, m, "an option longer than %d bytes", maxOptionBytes)
		}
		if a, ok := commonAttrs[o]; ok {
			c.attrs |= a
			continue
		}
		rest = append(rest, o)
	}
	var err error
	switch m.Type {
	case "bind":
		err = r.checkBind(&c, m, rest)
	case "overlay":
		err = r.checkOverlay(&c, m, rest)
	case "tmpfs":
		err = checkTmpfs(&c, m, rest)
	default:
		return c, refusal(i, m, "type %s is not bind, overlay or tmpfs", clip.Quote(m.Type))
	}
	if err != nil {
		return c, refusal(i, m, "%s", err)
	}
	return c, nil
}

func (r *mountRules) checkBind(c *checkedMount, m *Mount, opts []string) error {
	if len(opts) > 0 {
		return fmt.Errorf("option %s is not allowed for a bind", clip.Quote(opts[0]))
	}
	if err := r.checkSource("source", m.Source, false); err != nil {
		return err
	}
	c.source = m.Source
	return nil
}

func (r *mountRules) checkOverlay(c *checkedMount, m *Mount, opts []string) error {
	if m.Source != "" && m.Source != "overlay" {
		return fmt.Errorf("an overlay's source must be empty or \"overlay\"")
	}
	set := map[string]bool{}
	for _, o := range opts {
		k, v, hasValue := strings.Cut(o, "=")
		if set[k] {
			return fmt.Errorf("option %s given twice", clip.Quote(k))
		}
		set[k] = true
		switch {
		case k == "lowerdir" && hasValue:
			lowers := strings.Split(v, ":")
			if len(lowers) > maxLowerDirs {
				return fmt.Errorf("%d lower directories, more than overlayfs's %d", len(lowers), maxLowerDirs)
			}
			for _, l := range lowers {
				if err := r.checkSource("lowerdir", l, true); err != nil {
					return err
				}
			}
			c.lowers = lowers
		case (k == "upperdir" || k == "workdir") && hasValue:
			if err := r.checkSource(k, v, false); err != nil {
				return err
			}
			if k == "upperdir" {
				c.upper = v
			} else {
				c.work = v
			}
		case k == "volatile" && !hasValue:
			c.fsOptions = append(c.fsOptions, [2]string{k, ""})
		default:
			allowed, known := overlayValues[k]
			if !known || !hasValue || !contains(allowed, v) {
				return fmt.Errorf("option %s is not allowed for an overlay", clip.Quote(o))
			}
			c.fsOptions = append(c.fsOptions, [2]string{k, v})
		}
	}
	if len(c.lowers) == 0 {
		return fmt.Errorf("an overlay needs lowerdir")
	}
	if (c.upper == "") != (c.work == "") {
		return fmt.Errorf("an overlay needs both upperdir and workdir, or neither")
	}
	for _, d := range overlayDefaults {
		if !set[d[0]] {
			c.fsOptions = append(c.fsOptions, d)
		}
	}
	return nil
}

func checkTmpfs(c *checkedMount, m *Mount, opts []string) error {
	if m.Source != "" && m.Source != "tmpfs" {
		return fmt.Errorf("a tmpfs's source must be empty or \"tmpfs\"")
	}
	set := map[string]bool{}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		if set[k] {
			return fmt.Errorf("option %s given twice", clip.Quote(k))
		}
		set[k] = true
		switch k {
		case "size", "nr_inodes":
			if !sizeValue(v) {
				return fmt.Errorf("option %s: want a number with an optional k, m or g", clip.Quote(o))
			}
		case "mode":
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil || n > 0o1777 {
				return fmt.Errorf("option %s: want an octal mode without set-id bits", clip.Quote(o))
			}
		default:
			return fmt.Errorf("option %s is not allowed for a tmpfs (size, nr_inodes and mode are)", clip.Quote(o))
		}
		c.fsOptions = append(c.fsOptions, [2]string{k, v})
	}
	return nil
}

// sizeValue reports whether v is a tmpfs size without a percentage: a
// number of bytes, with an optional k, m or g.
func sizeValue(v string) bool {
	num := strings.TrimRight(v, "kKmMgG")
	if len(v)-len(num) > 1 || num == "" || len(num) > 20 {
		return false
	}
	_, err := strconv.ParseUint(num, 10, 64)
	return err == nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
