package plugin

import (
	"context"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// ServeStorage serves impl as a storage plugin on behalf of the berth
// that started this program, and returns when berth is done with it. A
// storage plugin's main calls it and nothing else.
//
// DAY-0 SKELETON.
func ServeStorage(impl StoragePlugin) {
	serve(KindStorage, func(s *grpc.Server) {
		pb.RegisterInfoServiceServer(s, &infoServer{kind: KindStorage, caps: storageCaps(impl), roots: impl.Roots()})
		registerStorage(s, impl)
	})
}

// ServeNetwork serves impl as a network plugin; see ServeStorage.
//
// DAY-0 SKELETON.
func ServeNetwork(impl NetworkPlugin) {
	serve(KindNetwork, func(s *grpc.Server) {
		pb.RegisterInfoServiceServer(s, &infoServer{kind: KindNetwork, caps: networkCaps(impl)})
		registerNetwork(s, impl)
	})
}

func serve(kind string, register func(*grpc.Server)) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         goplugin.PluginSet{pluginName: &grpcPlugin{register: register}},
		GRPCServer:      goplugin.DefaultGRPCServer,
	})
}

type infoServer struct {
	pb.UnimplementedInfoServiceServer
	kind  string
	caps  []string
	roots []string
}

func (s *infoServer) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	return &pb.InfoResponse{Kind: s.kind, Capabilities: s.caps, Roots: s.roots}, nil
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
