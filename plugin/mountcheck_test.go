package plugin

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var testRules = mountRules{
	roots:  []string{"/srv/plugin"},
	layers: map[string]bool{"/var/lib/berth/layers/aa/diff": true},
	denied: forbidden{
		dirs:   append(append([]string(nil), deniedDirs...), "/var/lib/berth"),
		except: []string{"/var/lib/berth/plugins"},
	},
}

// The rules accept what an honest plugin answers, and force nosuid, nodev
// and overlayfs's safe defaults on it.
func TestCheckMountsAccepts(t *testing.T) {
	ms := []Mount{
		{Type: "overlay", IDMap: true, Options: []string{
			"lowerdir=/srv/plugin/k/extra:/var/lib/berth/layers/aa/diff",
			"upperdir=/srv/plugin/k/upper", "workdir=/srv/plugin/k/work", "xino=off", "volatile", "ro"}},
		{Type: "bind", Source: "/srv/plugin/k/data", Target: "var/data", Options: []string{"nosuid", "noexec"}},
		{Type: "tmpfs", Target: "tmp", Options: []string{"size=64m", "nr_inodes=1000", "mode=1777"}},
	}
	got, err := testRules.checkMounts(ms)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if c.attrs&(unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV) != unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV {
			t.Errorf("mount %d: attrs %#x lack nosuid or nodev", i, c.attrs)
		}
	}
	o := got[0]
	if len(o.lowers) != 2 || o.upper != "/srv/plugin/k/upper" || o.work != "/srv/plugin/k/work" || !o.idmap || o.attrs&unix.MOUNT_ATTR_RDONLY == 0 {
		t.Errorf("overlay checked as %+v", o)
	}
	opts := map[string]string{}
	for _, kv := range o.fsOptions {
		opts[kv[0]] = kv[1]
	}
	for k, v := range map[string]string{"redirect_dir": "off", "metacopy": "off", "index": "off", "xino": "off", "volatile": ""} {
		if got, ok := opts[k]; !ok || got != v {
			t.Errorf("overlay option %s = %q, %v; want %q", k, got, ok, v)
		}
	}
	if got[1].attrs&unix.MOUNT_ATTR_NOEXEC == 0 || got[1].source != "/srv/plugin/k/data" {
		t.Errorf("bind checked as %+v", got[1])
	}
}

// Each rule refuses what it is there to refuse, naming it.
func TestCheckMountsRefuses(t *testing.T) {
	root := Mount{Type: "bind", Source: "/srv/plugin/k/rootfs"}
	for _, tt := range []struct {
		name string
		m    Mount
		want string
	}{
		{"source outside roots", Mount{Type: "bind", Source: "/etc", Target: "x"}, "not under the plugin's roots"},
		{"source beside a root", Mount{Type: "bind", Source: "/srv/plugin2", Target: "x"}, "not under the plugin's roots"},
		{"relative source", Mount{Type: "bind", Source: "srv/plugin", Target: "x"}, "not an absolute path"},
		{"source with ..", Mount{Type: "bind", Source: "/srv/plugin/../../etc", Target: "x"}, "not a clean path"},
		{"source with a trailing slash", Mount{Type: "bind", Source: "/srv/plugin/k/", Target: "x"}, "not a clean path"},
		{"source with a newline", Mount{Type: "bind", Source: "/srv/plugin/k\n", Target: "x"}, "control character"},
		{"source with a colon", Mount{Type: "bind", Source: "/srv/plugin/a:b", Target: "x"}, "mount options give a meaning to"},
		{"layer as a bind", Mount{Type: "bind", Source: "/var/lib/berth/layers/aa/diff", Target: "x"}, "in /var/lib/berth"},
		{"another layer", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/var/lib/berth/layers/bb/diff"}}, "in /var/lib/berth"},
		{"layer as upper", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "upperdir=/var/lib/berth/layers/aa/diff", "workdir=/srv/plugin/w"}}, "in /var/lib/berth"},
		{"upper without work", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "upperdir=/srv/plugin/u"}}, "both upperdir and workdir"},
		{"no lowerdir", Mount{Type: "overlay", Target: "x"}, "needs lowerdir"},
		{"lowerdir twice", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "lowerdir=/etc"}}, "given twice"},
		{"lowerdir+", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "lowerdir+=/etc"}}, "not allowed for an overlay"},
		{"redirect_dir=on", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "redirect_dir=on"}}, "not allowed"},
		{"userxattr", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "userxattr"}}, "not allowed"},
		{"overlay source", Mount{Type: "overlay", Source: "/etc", Target: "x", Options: []string{"lowerdir=/srv/plugin/l"}}, "source must be empty"},
		{"suid", Mount{Type: "tmpfs", Target: "x", Options: []string{"suid"}}, "not allowed for a tmpfs"},
		{"dev", Mount{Type: "bind", Source: "/srv/plugin/k", Target: "x", Options: []string{"dev"}}, "not allowed for a bind"},
		{"tmpfs size in percent", Mount{Type: "tmpfs", Target: "x", Options: []string{"size=50%"}}, "want a number"},
		{"tmpfs setuid mode", Mount{Type: "tmpfs", Target: "x", Options: []string{"mode=4755"}}, "without set-id bits"},
		{"tmpfs huge", Mount{Type: "tmpfs", Target: "x", Options: []string{"huge=always"}}, "not allowed for a tmpfs"},
		{"proc", Mount{Type: "proc", Target: "x"}, "not bind, overlay or tmpfs"},
		{"target ..", Mount{Type: "tmpfs", Target: "../x"}, "leaves the rootfs"},
		{"target ..", Mount{Type: "tmpfs", Target: ".."}, "leaves the rootfs"},
		{"target absolute", Mount{Type: "tmpfs", Target: "/x"}, "is absolute"},
		{"target unclean", Mount{Type: "tmpfs", Target: "a//b"}, "not a clean path"},
		{"target root again", Mount{Type: "tmpfs", Target: ""}, "only the first mount"},
		{"long option", Mount{Type: "tmpfs", Target: "x", Options: []string{"size=" + strings.Repeat("1", 5000)}}, "longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := testRules.checkMounts([]Mount{root, tt.m})
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrRefused saying %q", err, tt.want)
			}
		})
	}
	if _, err := testRules.checkMounts([]Mount{{Type: "tmpfs", Target: "x"}}); !errors.Is(err, ErrRefused) {
		t.Errorf("a first mount with a target: %v", err)
	}
	if _, err := testRules.checkMounts(nil); !errors.Is(err, ErrRefused) {
		t.Errorf("no mounts: %v", err)
	}
	many := make([]Mount, maxMounts+1)
	many[0] = root
	for i := 1; i < len(many); i++ {
		many[i] = Mount{Type: "tmpfs", Target: "x"}
	}
	if _, err := testRules.checkMounts(many); !errors.Is(err, ErrRefused) {
		t.Errorf("%d mounts: %v", len(many), err)
	}
	if _, err := testRules.checkMounts(many[:maxMounts]); err != nil {
		t.Errorf("%d mounts: %v", maxMounts, err)
	}
}

// A source above a denied directory shows what is in it, even as a bind
// that leaves out the mounts below: it is refused whatever the roots say.
func TestCheckMountsRefusesAncestors(t *testing.T) {
	r := testRules
	r.roots = []string{"/srv/plugin", "/var", "/run"}
	root := Mount{Type: "bind", Source: "/srv/plugin/k/rootfs"}
	for _, tt := range []struct {
		name string
		m    Mount
		want string
	}{
		{"source above the store", Mount{Type: "bind", Source: "/var/lib", Target: "x"}, "holds /var/lib/berth"},
		{"source above berth's run directory", Mount{Type: "bind", Source: "/run", Target: "x"}, "holds /run/berth"},
		{"lower above the store", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/var"}}, "holds /var/lib/berth"},
		{"upper above the store", Mount{Type: "overlay", Target: "x", Options: []string{"lowerdir=/srv/plugin/l", "upperdir=/var/lib", "workdir=/srv/plugin/w"}}, "holds /var/lib/berth"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.checkMounts([]Mount{root, tt.m})
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrRefused saying %q", err, tt.want)
			}
		})
	}
	if _, err := r.checkMounts([]Mount{root, {Type: "bind", Source: "/var/cache", Target: "x"}}); err != nil {
		t.Errorf("a source beside the store: %v", err)
	}
}

func TestCheckRoots(t *testing.T) {
	denied := testRules.denied
	if err := checkRoots([]string{"/srv/plugin", "/var/lib/plugin", "/var/lib/berth/plugins/x"}, denied); err != nil {
		t.Errorf("good roots: %v", err)
	}
	for _, roots := range [][]string{
		nil, {"/"}, {"relative"}, {"/srv/../etc"}, {"/srv/"}, {"/proc/1"}, {"/sys"}, {"/dev/shm"},
		{"/run/berth/tmpfs-storage"}, {"/run"}, {"/var/lib"}, {"/var"}, {"/var/lib/berth/x"}, {"/var/lib/berth"}, {"/var/lib/berth/pluginsx"}, {"/srv/a", "/"},
		make([]string, maxRoots+1),
	} {
		if err := checkRoots(roots, denied); !errors.Is(err, ErrRefused) {
			t.Errorf("roots %q: %v, want ErrRefused", roots, err)
		}
	}
}

// A plugin may keep its state in the store's plugins directory, and
// nowhere else in the store.
func TestCheckMountsStorePlugins(t *testing.T) {
	r := testRules
	r.roots = []string{"/var/lib/berth/plugins/p"}
	if _, err := r.checkMounts([]Mount{{Type: "bind", Source: "/var/lib/berth/plugins/p/k"}}); err != nil {
		t.Errorf("a source in the store's plugins directory: %v", err)
	}
	r.roots = []string{"/var/lib/berth/plugins/p", "/var/lib/berth"}
	if _, err := r.checkMounts([]Mount{{Type: "bind", Source: "/var/lib/berth/rootfs/other/state"}}); !errors.Is(err, ErrRefused) {
		t.Errorf("a source in the store's rootfses: %v, want ErrRefused", err)
	}
}
