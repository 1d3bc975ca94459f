package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/security"
)

// securityFlags are `berth run`'s security options.
type securityFlags struct {
	preset        string
	capAdd        []string
	capDrop       []string
	userns        string
	landlock      bool
	seccomp       string
	selinux       string
	apparmor      string
	lsmBestEffort bool
}

func (f *securityFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.preset, "security", "default", "security preset: default, strict or unconfined")
	cmd.Flags().StringArrayVar(&f.capAdd, "cap-add", nil, "grant a capability (e.g. NET_ADMIN, or ALL)")
	cmd.Flags().StringArrayVar(&f.capDrop, "cap-drop", nil, "drop a capability (e.g. CHOWN, or ALL)")
	cmd.Flags().StringVar(&f.userns, "userns", "", `user namespace: "host" for none, "default" for 0:100000:65536, or CONTAINER:HOST:SIZE[,...] (default: the preset's)`)
	cmd.Flags().BoolVar(&f.landlock, "landlock", false, "confine file access to the sandbox's tree with Landlock (strict has it)")
	cmd.Flags().StringVar(&f.seccomp, "seccomp", "", `seccomp profile: a JSON file in Docker's format, or "unconfined" (default: the preset's)`)
	cmd.Flags().StringVar(&f.selinux, "selinux-label", "", "SELinux process label, e.g. system_u:system_r:container_t:s0:c1,c2")
	cmd.Flags().StringVar(&f.apparmor, "apparmor", "", "AppArmor profile to run the workload under")
	cmd.Flags().BoolVar(&f.lsmBestEffort, "lsm-best-effort", false, "skip SELinux/AppArmor labels the host cannot apply instead of failing")
}

// config builds the security configuration the flags describe.
func (f *securityFlags) config() (*security.Config, error) {
	c, err := security.Preset(f.preset)
	if err != nil {
		return nil, err
	}
	if len(f.capAdd) > 0 || len(f.capDrop) > 0 {
		if c.Capabilities, err = c.WithCapabilities(f.capAdd, f.capDrop); err != nil {
			return nil, err
		}
	}
	if f.landlock {
		c.Landlock = true
	}
	switch f.seccomp {
	case "":
	case "unconfined":
		c.Seccomp = nil
	default:
		if c.Seccomp, err = security.LoadSeccompProfile(f.seccomp); err != nil {
			return nil, err
		}
	}
	c.LSM = security.LSMOptions{SELinuxLabel: f.selinux, AppArmorProfile: f.apparmor, BestEffort: f.lsmBestEffort}
	switch f.userns {
	case "":
	case "host":
		c.UserNamespace = nil
	case "default":
		c.UserNamespace = security.DefaultUserNamespace()
	default:
		m, err := parseIDMaps(f.userns)
		if err != nil {
			return nil, fmt.Errorf("--userns %q: %w", f.userns, err)
		}
		c.UserNamespace = &security.UserNamespace{UIDMap: m, GIDMap: m}
	}
	return c, nil
}

// parseIDMaps reads CONTAINER:HOST:SIZE[,CONTAINER:HOST:SIZE...].
func parseIDMaps(s string) ([]security.IDMap, error) {
	var out []security.IDMap
	for _, part := range strings.Split(s, ",") {
		f := strings.Split(part, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("mapping %q: want CONTAINER:HOST:SIZE", part)
		}
		var n [3]uint32
		for i, x := range f {
			v, err := strconv.ParseUint(x, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("mapping %q: %q is not a number", part, x)
			}
			n[i] = uint32(v)
		}
		if n[2] == 0 {
			return nil, fmt.Errorf("mapping %q: size 0", part)
		}
		// The kernel refuses a range that wraps past the last 32-bit id.
		if uint64(n[0])+uint64(n[2]) >= 1<<32 || uint64(n[1])+uint64(n[2]) >= 1<<32 {
			return nil, fmt.Errorf("mapping %q: the range runs past id %d", part, uint32(1<<32-2))
		}
		out = append(out, security.IDMap{ContainerID: n[0], HostID: n[1], Size: n[2]})
	}
	return out, nil
}

func newSecurityCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "security", Short: "Show berth's security settings"}
	profile := &cobra.Command{
		Use:       "profile default|strict",
		Short:     "Print a preset's seccomp profile as JSON, in Docker's format",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"default", "strict"},
		RunE: func(cmd *cobra.Command, args []string) error {
			var p *security.SeccompProfile
			switch args[0] {
			case "default":
				p = security.DefaultSeccompProfile()
			case "strict":
				p = security.StrictSeccompProfile()
			default:
				return fmt.Errorf("no profile %q: want default or strict", args[0])
			}
			b, err := p.JSON()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.AddCommand(profile)
	return cmd
}
