package main

import (
	"context"
	"errors"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/plugin"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// serveRaw serves the protocol with go-plugin and the generated code
// alone, as a plugin that does not use the SDK would: the handshake's
// values are the protocol's, written out.
func serveRaw(v *veths) {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: goplugin.HandshakeConfig{
			ProtocolVersion:  plugin.ProtocolVersion,
			MagicCookieKey:   "BERTH_PLUGIN",
			MagicCookieValue: "f3b1c8e2-berth-plugin-protocol",
		},
		Plugins:    goplugin.PluginSet{"berth": &rawPlugin{v: v}},
		GRPCServer: goplugin.DefaultGRPCServer,
	})
}

type rawPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	v *veths
}

func (p *rawPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterInfoServiceServer(s, rawInfo{})
	pb.RegisterNetworkServiceServer(s, &rawNetwork{v: p.v})
	return nil
}

func (p *rawPlugin) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

type rawInfo struct {
	pb.UnimplementedInfoServiceServer
}

func (rawInfo) Info(context.Context, *pb.InfoRequest) (*pb.InfoResponse, error) {
	return &pb.InfoResponse{Kind: plugin.KindNetwork, Name: "testnetwork-raw",
		Capabilities: []string{plugin.CapPorts, plugin.CapDNS}}, nil
}

// rawNetwork attaches for real, then tells the lie asked for.
type rawNetwork struct {
	pb.UnimplementedNetworkServiceServer
	v *veths
}

func (n *rawNetwork) Attach(ctx context.Context, req *pb.AttachRequest) (*pb.AttachResponse, error) {
	l, err := n.v.attach(req.GetId(), req.GetNetnsPath(), false)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	r := &pb.AttachResponse{Network: "testnetwork", Interface: l.ifname,
		Addresses: []string{l.sandboxIP.String()}, Gateway: l.hostIP.Addr().String(),
		Routes:   []*pb.Route{{Destination: "0.0.0.0/0", Gateway: l.hostIP.Addr().String()}},
		Hosts:    []*pb.HostEntry{{Ip: l.hostIP.Addr().String(), Names: []string{"gateway.test"}}},
		NetnsIno: req.GetNetnsIno()}
	for i, p := range req.GetPorts() {
		q := &pb.PortMapping{HostIp: p.GetHostIp(), HostPort: p.GetHostPort(), ContainerPort: p.GetContainerPort(), Protocol: p.GetProtocol()}
		if q.HostPort == 0 {
			q.HostPort = uint32(40000 + i)
		}
		r.Ports = append(r.Ports, q)
	}
	switch req.GetOptions()["lie"] {
	case "ino":
		r.NetnsIno++
	case "garbage":
		r.Addresses = []string{"banana"}
	case "loopback":
		r.Addresses = []string{"127.0.0.1/8"}
	case "noaddr":
		r.Addresses = append(r.Addresses, "10.247.255.254/31")
	case "noif":
		r.Interface = "eth9"
	case "hostsnl":
		r.Hosts = append(r.Hosts, &pb.HostEntry{Ip: "10.247.0.9", Names: []string{"db\n10.66.6.6 example.com"}})
	case "ports":
		r.Ports = append(r.Ports, &pb.PortMapping{HostPort: 2222, ContainerPort: 22, Protocol: "tcp"})
	case "netname":
		r.Network = "net\n10.66.6.6 example.com"
	case "dns":
		r.Dns = &pb.DNSConfig{Search: []string{"example.com\nnameserver 10.66.6.6"}}
	}
	return r, nil
}

func (n *rawNetwork) Detach(ctx context.Context, req *pb.DetachRequest) (*pb.DetachResponse, error) {
	if err := n.v.detach(req.GetId()); err != nil {
		code := codes.Unknown
		if errors.Is(err, plugin.ErrNotFound) {
			code = codes.NotFound
		}
		return nil, status.Error(code, err.Error())
	}
	return &pb.DetachResponse{}, nil
}

func (n *rawNetwork) List(ctx context.Context, _ *pb.NetworkServiceListRequest) (*pb.NetworkServiceListResponse, error) {
	ids, err := n.v.list()
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &pb.NetworkServiceListResponse{Ids: ids}, nil
}
