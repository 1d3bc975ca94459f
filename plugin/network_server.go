package plugin

import (
	"context"
	"fmt"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/netplug"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// registerNetwork registers impl's NetworkService on s.
func registerNetwork(s *grpc.Server, impl NetworkPlugin) {
	pb.RegisterNetworkServiceServer(s, &networkServer{impl: impl})
}

// networkServer is the plugin's side of the protocol: it turns requests
// into impl's types and its answers into the protocol's, and takes care
// of the namespace's identity so that impl need not.
type networkServer struct {
	pb.UnimplementedNetworkServiceServer
	impl NetworkPlugin
}

// Attach opens the namespace berth named, checks that it is the one berth
// opened (a pid reused since would name another), and holds it open while
// impl attaches it through a path to that descriptor.
func (s *networkServer) Attach(ctx context.Context, req *pb.AttachRequest) (*pb.AttachResponse, error) {
	if !keyRE.MatchString(req.GetId()) {
		return nil, status.Errorf(codes.InvalidArgument, "sandbox id %s is not an id", clip.Quote(req.GetId()))
	}
	if req.GetNetnsIno() == 0 {
		return nil, status.Error(codes.InvalidArgument, "the request does not say which namespace it means")
	}
	ns, err := openNetns(req.GetNetnsPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	defer ns.Close()
	if ns.dev != req.GetNetnsDev() || ns.ino != req.GetNetnsIno() {
		return nil, status.Errorf(codes.InvalidArgument, "%s is namespace %d:%d, not %d:%d, the one berth meant",
			clip.Quote(req.GetNetnsPath()), ns.dev, ns.ino, req.GetNetnsDev(), req.GetNetnsIno())
	}
	areq, err := attachRequestFromPB(req, ns.procPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := s.impl.Attach(ctx, areq)
	if err != nil {
		return nil, toStatus(err)
	}
	if res == nil {
		return nil, status.Error(codes.Internal, "the plugin's Attach returned no result")
	}
	r := attachResponseToPB(res)
	r.NetnsIno = ns.ino
	return r, nil
}

func (s *networkServer) Detach(ctx context.Context, req *pb.DetachRequest) (*pb.DetachResponse, error) {
	if !keyRE.MatchString(req.GetId()) {
		return nil, status.Errorf(codes.InvalidArgument, "sandbox id %s is not an id", clip.Quote(req.GetId()))
	}
	if err := s.impl.Detach(ctx, req.GetId(), req.GetNetnsPath()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.DetachResponse{}, nil
}

func (s *networkServer) List(ctx context.Context, _ *pb.NetworkServiceListRequest) (*pb.NetworkServiceListResponse, error) {
	ids, err := s.impl.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.NetworkServiceListResponse{Ids: ids}, nil
}

// attachRequestFromPB is req in the SDK's types, with netnsPath in place
// of the path berth sent.
func attachRequestFromPB(req *pb.AttachRequest, netnsPath string) (*AttachRequest, error) {
	a := &AttachRequest{ID: req.GetId(), NetnsPath: netnsPath, Hostname: req.GetHostname(),
		Aliases: req.GetAliases(), Options: req.GetOptions()}
	for _, p := range req.GetPorts() {
		if p.GetHostPort() > 65535 || p.GetContainerPort() > 65535 {
			return nil, fmt.Errorf("port mapping %d->%d: port out of range", p.GetHostPort(), p.GetContainerPort())
		}
		a.Ports = append(a.Ports, netplug.PortMapping{HostIP: p.GetHostIp(), HostPort: uint16(p.GetHostPort()),
			ContainerPort: uint16(p.GetContainerPort()), Protocol: p.GetProtocol()})
	}
	if d := req.GetDns(); d != nil {
		a.DNS = &netplug.DNSConfig{Search: d.GetSearch(), Options: d.GetOptions()}
		for _, s := range d.GetNameservers() {
			ns, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("nameserver %s: %w", clip.Quote(s), err)
			}
			a.DNS.Nameservers = append(a.DNS.Nameservers, ns)
		}
	}
	return a, nil
}

// attachResponseToPB spells res for the wire. berth checks it on its side;
// nothing here is trusted.
func attachResponseToPB(res *AttachResult) *pb.AttachResponse {
	r := &pb.AttachResponse{Network: res.Network, Interface: res.Interface}
	for _, p := range res.IPs {
		r.Addresses = append(r.Addresses, p.String())
	}
	if res.Gateway.IsValid() {
		r.Gateway = res.Gateway.String()
	}
	for _, rt := range res.Routes {
		x := &pb.Route{Destination: rt.Destination.String()}
		if rt.Gateway.IsValid() {
			x.Gateway = rt.Gateway.String()
		}
		r.Routes = append(r.Routes, x)
	}
	for _, p := range res.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp" // netplug's default, which berth spells out
		}
		r.Ports = append(r.Ports, &pb.PortMapping{HostIp: p.HostIP, HostPort: uint32(p.HostPort),
			ContainerPort: uint32(p.ContainerPort), Protocol: proto})
	}
	for _, h := range res.Hosts {
		r.Hosts = append(r.Hosts, &pb.HostEntry{Ip: h.IP.String(), Names: h.Names})
	}
	if d := res.DNS; len(d.Nameservers)+len(d.Search)+len(d.Options) > 0 {
		r.Dns = dnsToPB(&d)
	}
	return r
}
