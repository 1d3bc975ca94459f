package plugin

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// stopGrace is how long a plugin told to stop (SIGTERM, SIGINT) lets the
// calls in flight finish before it ends them.
const stopGrace = 10 * time.Second

// ServeStorage serves impl as a storage plugin on behalf of the berth
// that started this program, and returns when berth is done with it. A
// storage plugin's main calls it and nothing else.
//
// The plugin's name is impl's Name() if it has that method, else the
// program's base name; its version is impl's Version() if it has that
// method, else the main module's version from the build information.
// Run by hand, not by berth, it says so on stderr and exits with status 1.
// SIGTERM and SIGINT stop it after the calls in flight (for at most 10s).
func ServeStorage(impl StoragePlugin) {
	info := &infoServer{kind: KindStorage, name: implName(impl), version: implVersion(impl), caps: storageCaps(impl), roots: impl.Roots()}
	serve(KindStorage, func(s *grpc.Server) {
		pb.RegisterInfoServiceServer(s, info)
		registerStorage(s, impl)
	})
}

// ServeNetwork serves impl as a network plugin; see ServeStorage.
func ServeNetwork(impl NetworkPlugin) {
	info := &infoServer{kind: KindNetwork, name: implName(impl), version: implVersion(impl), caps: networkCaps(impl)}
	serve(KindNetwork, func(s *grpc.Server) {
		pb.RegisterInfoServiceServer(s, info)
		registerNetwork(s, impl)
	})
}

// serve runs go-plugin's server with berth's handshake; register adds the
// services. It returns when berth closes the plugin or a signal stops it.
func serve(kind string, register func(*grpc.Server)) {
	if os.Getenv(handshake.MagicCookieKey) != handshake.MagicCookieValue {
		// go-plugin says much the same, then exits 1; this says which
		// plugin and how it is meant to be used.
		fmt.Fprintf(os.Stderr, "%s is a berth %s plugin: berth starts it (berth run --%s-plugin %s); run by hand it does nothing.\n",
			filepath.Base(os.Args[0]), kind, kind, os.Args[0])
		os.Exit(1)
	}
	var (
		mu  sync.Mutex
		srv *grpc.Server
		d   drain
	)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(stop)
	go func() {
		if _, ok := <-stop; !ok {
			return
		}
		mu.Lock()
		s := srv
		mu.Unlock()
		if s == nil {
			os.Exit(1) // stopped before it served anything
		}
		// Not GracefulStop: that also waits for go-plugin's own streams
		// (stdio), which berth keeps open for the plugin's life.
		d.wait(stopGrace)
		s.Stop()
	}()
	level := hclog.LevelFromString(os.Getenv(envLogLevel))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         goplugin.PluginSet{pluginName: &grpcPlugin{register: register}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, grpc.ChainUnaryInterceptor(d.unary), grpc.ChainStreamInterceptor(d.stream))
			s := grpc.NewServer(opts...)
			mu.Lock()
			srv = s
			mu.Unlock()
			return s
		},
		Logger: hclog.New(&hclog.LoggerOptions{Output: processStderr, JSONFormat: true, Level: level}),
	})
}

// implName is the name a plugin goes by.
func implName(impl any) string {
	if n, ok := impl.(interface{ Name() string }); ok {
		return n.Name()
	}
	return filepath.Base(os.Args[0])
}

// implVersion is the version a plugin reports: its Version method's, or
// the main module's, or its VCS revision for a development build.
func implVersion(impl any) string {
	if v, ok := impl.(interface{ Version() string }); ok {
		return v.Version()
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "(devel)"
}

type infoServer struct {
	pb.UnimplementedInfoServiceServer
	kind, name, version string
	caps, roots         []string
}

func (s *infoServer) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	return &pb.InfoResponse{Kind: s.kind, Name: s.name, Version: s.version, Capabilities: s.caps, Roots: s.roots}, nil
}

// storageCaps lists what impl's optional interfaces announce.
func storageCaps(impl StoragePlugin) []string {
	var caps []string
	if _, ok := impl.(Differ); ok {
		caps = append(caps, CapDiff)
	}
	if o, ok := impl.(OwnerShifter); ok && o.ShiftsOwners() {
		caps = append(caps, CapIDMap)
	}
	if q, ok := impl.(QuotaEnforcer); ok && q.EnforcesQuota() {
		caps = append(caps, CapQuota)
	}
	return caps
}

func networkCaps(impl NetworkPlugin) []string {
	var caps []string
	if p, ok := impl.(PortPublisher); ok && p.PublishesPorts() {
		caps = append(caps, CapPorts)
	}
	if d, ok := impl.(DNSConfigurer); ok && d.ConfiguresDNS() {
		caps = append(caps, CapDNS)
	}
	return caps
}

// A drain counts the calls of berth's services in flight, so that a
// plugin told to stop lets them finish, and refuses new ones meanwhile.
type drain struct {
	mu       sync.Mutex
	inFlight int
	draining bool
	idle     chan struct{} // closed when draining and nothing is in flight
}

// berthMethod reports whether a gRPC method is one of berth's protocol
// (not go-plugin's own services).
func berthMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/berth.plugin.")
}

func (d *drain) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining {
		return status.Error(codes.Unavailable, "plugin is stopping")
	}
	d.inFlight++
	return nil
}

func (d *drain) leave() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight--
	if d.draining && d.inFlight == 0 {
		close(d.idle)
	}
}

// wait refuses new calls and waits at most grace for those in flight.
func (d *drain) wait(grace time.Duration) {
	d.mu.Lock()
	d.draining = true
	d.idle = make(chan struct{})
	if d.inFlight == 0 {
		close(d.idle)
	}
	idle := d.idle
	d.mu.Unlock()
	select {
	case <-idle:
	case <-time.After(grace):
	}
}

func (d *drain) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !berthMethod(info.FullMethod) {
		return handler(ctx, req)
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.leave()
	return handler(ctx, req)
}

func (d *drain) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !berthMethod(info.FullMethod) {
		return handler(srv, ss)
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.leave()
	return handler(srv, ss)
}
