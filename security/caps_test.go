package security

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCapabilityMask(t *testing.T) {
	m, err := CapabilityMask(Default().Capabilities)
	if err != nil || m != 0xa00405fb {
		t.Errorf("default set = %#x, %v; want 0xa00405fb (Docker's less MKNOD and NET_RAW)", m, err)
	}
	if m, err := CapabilityMask([]string{"net_admin", "CAP_SYS_ADMIN"}); err != nil || m != 1<<12|1<<21 {
		t.Errorf("mixed spellings: %#x %v", m, err)
	}
	if m, _ := CapabilityMask([]string{"ALL"}); m != 1<<41-1 {
		t.Errorf("ALL = %#x", m)
	}
	if _, err := CapabilityMask([]string{"CAP_FLY"}); !errors.Is(err, ErrUnknownCapability) {
		t.Errorf("unknown name: %v", err)
	}
	if got := CapabilityNames(1<<0 | 1<<40); !cmp.Equal(got, []string{"CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"}) {
		t.Errorf("names: %v", got)
	}
}

func TestWithCapabilities(t *testing.T) {
	for _, tc := range []struct {
		add, drop, want []string
	}{
		{nil, []string{"ALL"}, nil},
		{[]string{"NET_RAW"}, []string{"ALL"}, []string{"CAP_NET_RAW"}},
		{[]string{"SYS_ADMIN"}, []string{"SYS_ADMIN"}, []string{"CAP_CHOWN"}},
		{[]string{"SYS_ADMIN"}, []string{"CHOWN"}, []string{"CAP_SYS_ADMIN"}},
	} {
		c := &Config{Capabilities: []string{"CAP_CHOWN"}}
		got, err := c.WithCapabilities(tc.add, tc.drop)
		if err != nil || !cmp.Equal(got, tc.want) {
			t.Errorf("add %v drop %v: %v %v, want %v", tc.add, tc.drop, got, err, tc.want)
		}
	}
	if _, err := Default().WithCapabilities([]string{"BOGUS"}, nil); !errors.Is(err, ErrUnknownCapability) {
		t.Errorf("bogus: %v", err)
	}
}

func TestPresets(t *testing.T) {
	for _, name := range []string{"default", "strict", "unconfined", ""} {
		if _, err := Preset(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	if _, err := Preset("lax"); err == nil {
		t.Error("unknown preset accepted")
	}
	s := Strict()
	if len(s.Capabilities) != 0 || s.UserNamespace == nil || !s.Landlock || !s.ReadonlyRootfs || !s.NoNewPrivileges || s.MemoryMax == 0 || s.PidsMax == 0 {
		t.Errorf("strict: %+v", s)
	}
	// Presets are fresh values: changing one leaves the next alone.
	Default().MaskedPaths[0] = "changed"
	if Default().MaskedPaths[0] == "changed" {
		t.Error("Default shares its slices")
	}
}
