package plugin

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/netplug"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// recordingNetwork is a NetworkPlugin that remembers what it was asked
// and what the path it was given named while Attach ran.
type recordingNetwork struct {
	calls   int
	path    string
	pathIno uint64
}

func (r *recordingNetwork) Attach(_ context.Context, req *AttachRequest) (*AttachResult, error) {
	r.calls++
	r.path = req.NetnsPath
	var st unix.Stat_t
	if err := unix.Stat(req.NetnsPath, &st); err == nil {
		r.pathIno = st.Ino
	}
	return &AttachResult{Attachment: netplug.Attachment{Interface: "eth0",
		IPs:   []netip.Prefix{netip.MustParsePrefix("10.0.0.3/31")},
		Ports: []netplug.PortMapping{{HostPort: 8080, ContainerPort: 80}}}}, nil
}

func (r *recordingNetwork) Detach(context.Context, string, string) error { return nil }
func (r *recordingNetwork) List(context.Context) ([]string, error)       { return nil, nil }

// The plugin side opens the namespace berth named, refuses one that is
// not the namespace berth meant without calling the impl, and gives the
// impl a path to its own descriptor of it, echoing its inode.
func TestNetworkServerChecksTheNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("makes network namespaces: must run as root")
	}
	path, other := testenv.Netns(t), testenv.Netns(t)
	ns, err := openNetns(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctx := t.Context()
	impl := &recordingNetwork{}
	s := &networkServer{impl: impl}

	for name, req := range map[string]*pb.AttachRequest{
		"another namespace":  {Id: "sb", NetnsPath: other, NetnsDev: ns.dev, NetnsIno: ns.ino},
		"another inode":      {Id: "sb", NetnsPath: path, NetnsDev: ns.dev, NetnsIno: ns.ino + 1},
		"another device":     {Id: "sb", NetnsPath: path, NetnsDev: ns.dev + 1, NetnsIno: ns.ino},
		"no identity":        {Id: "sb", NetnsPath: path},
		"not a namespace":    {Id: "sb", NetnsPath: "/etc/hostname", NetnsDev: ns.dev, NetnsIno: ns.ino},
		"mount namespace":    {Id: "sb", NetnsPath: "/proc/self/ns/mnt", NetnsDev: ns.dev, NetnsIno: ns.ino},
		"relative path":      {Id: "sb", NetnsPath: "netns", NetnsDev: ns.dev, NetnsIno: ns.ino},
		"bad id":             {Id: "../sb", NetnsPath: path, NetnsDev: ns.dev, NetnsIno: ns.ino},
		"port out of range":  {Id: "sb", NetnsPath: path, NetnsDev: ns.dev, NetnsIno: ns.ino, Ports: []*pb.PortMapping{{ContainerPort: 70000}}},
		"nameserver garbage": {Id: "sb", NetnsPath: path, NetnsDev: ns.dev, NetnsIno: ns.ino, Dns: &pb.DNSConfig{Nameservers: []string{"x"}}},
	} {
		if _, err := s.Attach(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if impl.calls != 0 {
		t.Fatalf("the impl was called %d times for requests that should not reach it", impl.calls)
	}

	r, err := s.Attach(ctx, &pb.AttachRequest{Id: "sb", NetnsPath: path, NetnsDev: ns.dev, NetnsIno: ns.ino,
		Ports: []*pb.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(impl.path, "/proc/") || !strings.Contains(impl.path, "/fd/") {
		t.Errorf("the impl was given %s, not a path to the server's descriptor", impl.path)
	}
	if impl.pathIno != ns.ino {
		t.Errorf("the path the impl was given named inode %d, want %d", impl.pathIno, ns.ino)
	}
	if r.GetNetnsIno() != ns.ino {
		t.Errorf("response echoes inode %d, want %d", r.GetNetnsIno(), ns.ino)
	}
	if len(r.GetPorts()) != 1 || r.GetPorts()[0].GetProtocol() != "tcp" {
		t.Errorf("ports %v: the default protocol is not spelled out", r.GetPorts())
	}
	if _, err := checkAnswer(&pb.AttachRequest{NetnsIno: ns.ino, Ports: []*pb.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}}, r); err != nil {
		t.Errorf("the host refuses what the glue made of a good result: %v", err)
	}
}

// A FIFO where a namespace should be is refused, not waited on.
func TestOpenNetnsRefusesAFIFO(t *testing.T) {
	fifo := t.TempDir() + "/fifo"
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openNetns(fifo); !errors.Is(err, ErrInvalid) {
		t.Fatalf("open a FIFO: %v, want ErrInvalid", err)
	}
}
