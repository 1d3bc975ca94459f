package plugin

import (
	"bufio"
	"bytes"
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/berth-dev/berth/internal/clip"
	"github.com/berth-dev/berth/layerfs"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// diffChunk is the most tar bytes one DiffResponse carries: well under
// gRPC's default 4 MiB message limit, and large enough that a big layer
// is not thousands of messages.
const diffChunk = 1 << 20

// storageServer serves a StoragePlugin on the plugin's side: it turns
// berth's requests into the SDK's types, checks what any implementation
// would have to, and the implementation's errors into statuses that keep
// their meaning on the host.
type storageServer struct {
	pb.UnimplementedStorageServiceServer
	impl StoragePlugin
}

// registerStorage registers impl's StorageService on s.
func registerStorage(s *grpc.Server, impl StoragePlugin) {
	pb.RegisterStorageServiceServer(s, &storageServer{impl: impl})
}

// invalid is the error for a request berth would never send.
func invalid(format string, args ...any) error {
	return toStatus(fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid))
}

func checkKey(key string) error {
	if !keyRE.MatchString(key) {
		return invalid("rootfs key %s: must be 1-128 letters, digits, '.', '_' or '-'", clip.Quote(key))
	}
	return nil
}

func (s *storageServer) Prepare(ctx context.Context, in *pb.PrepareRequest) (*pb.PrepareResponse, error) {
	if err := checkKey(in.GetKey()); err != nil {
		return nil, err
	}
	req := prepareRequestFromPB(in)
	for _, m := range [][]layerfs.IDMap{req.UIDMap, req.GIDMap} {
		for _, r := range m {
			if r.Size == 0 || uint64(r.ContainerID)+uint64(r.Size) > 1<<32 || uint64(r.HostID)+uint64(r.Size) > 1<<32 {
				return nil, invalid("id map range %+v is empty or goes past the largest id", r)
			}
		}
	}
	if req.DiskQuota < 0 || req.DiskInodes < 0 {
		return nil, invalid("negative disk quota")
	}
	res, err := s.impl.Prepare(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	if ctx.Err() != nil {
		// The caller gave up while the plugin worked: nobody will mount
		// the rootfs, and the Release berth sent when it gave up may
		// have come before it was made. The plugin undoes it itself.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		if rerr := s.impl.Release(rctx, req.Key); rerr != nil {
			return nil, toStatus(fmt.Errorf("%w (and releasing what was made: %v)", ctx.Err(), rerr))
		}
		return nil, toStatus(ctx.Err())
	}
	if res == nil {
		return nil, toStatus(fmt.Errorf("prepare %s: the plugin returned no mounts", req.Key))
	}
	return prepareResultToPB(res), nil
}

func (s *storageServer) Release(ctx context.Context, in *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	if err := checkKey(in.GetKey()); err != nil {
		return nil, err
	}
	if err := s.impl.Release(ctx, in.GetKey()); err != nil {
		return nil, toStatus(err)
	}
	return &pb.ReleaseResponse{}, nil
}

func (s *storageServer) List(ctx context.Context, _ *pb.StorageServiceListRequest) (*pb.StorageServiceListResponse, error) {
	keys, err := s.impl.List(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StorageServiceListResponse{Keys: keys}, nil
}

func (s *storageServer) Diff(in *pb.DiffRequest, stream grpc.ServerStreamingServer[pb.DiffResponse]) error {
	d, ok := s.impl.(Differ)
	if !ok {
		return toStatus(fmt.Errorf("diff: %w", ErrUnsupported))
	}
	if err := checkKey(in.GetKey()); err != nil {
		return err
	}
	// Small writes (a tar header is 512 bytes) are gathered into chunks.
	w := bufio.NewWriterSize(&chunkWriter{stream}, diffChunk)
	if err := d.Diff(stream.Context(), in.GetKey(), w); err != nil {
		return toStatus(err)
	}
	if err := w.Flush(); err != nil {
		return toStatus(err)
	}
	return nil
}

// chunkWriter sends what is written to it as DiffResponses of at most
// diffChunk bytes.
type chunkWriter struct {
	stream grpc.ServerStreamingServer[pb.DiffResponse]
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := p[:min(len(p), diffChunk)]
		// gRPC may still hold the message after Send returns, and the
		// caller reuses p.
		if err := w.stream.Send(&pb.DiffResponse{Data: bytes.Clone(c)}); err != nil {
			return n, err
		}
		n += len(c)
		p = p[len(c):]
	}
	return n, nil
}

func prepareRequestToPB(r *PrepareRequest) *pb.PrepareRequest {
	out := &pb.PrepareRequest{
		Key: r.Key, ImageDigest: r.ImageDigest,
		UidMap: idMapsToPB(r.UIDMap), GidMap: idMapsToPB(r.GIDMap),
		DiskQuota: r.DiskQuota, DiskInodes: r.DiskInodes, Options: r.Options,
	}
	for _, l := range r.Layers {
		out.Layers = append(out.Layers, &pb.Layer{
			Digest: l.Digest, DiffId: l.DiffID, MediaType: l.MediaType, Size: l.Size,
			UnpackedPath: l.UnpackedPath, BlobPath: l.BlobPath,
		})
	}
	return out
}

func prepareRequestFromPB(in *pb.PrepareRequest) *PrepareRequest {
	r := &PrepareRequest{
		Key: in.GetKey(), ImageDigest: in.GetImageDigest(),
		UIDMap: idMapsFromPB(in.GetUidMap()), GIDMap: idMapsFromPB(in.GetGidMap()),
		DiskQuota: in.GetDiskQuota(), DiskInodes: in.GetDiskInodes(), Options: in.GetOptions(),
	}
	for _, l := range in.GetLayers() {
		r.Layers = append(r.Layers, Layer{
			Digest: l.GetDigest(), DiffID: l.GetDiffId(), MediaType: l.GetMediaType(), Size: l.GetSize(),
			UnpackedPath: l.GetUnpackedPath(), BlobPath: l.GetBlobPath(),
		})
	}
	return r
}

func idMapsToPB(maps []layerfs.IDMap) []*pb.IDMap {
	var out []*pb.IDMap
	for _, m := range maps {
		out = append(out, &pb.IDMap{ContainerId: m.ContainerID, HostId: m.HostID, Size: m.Size})
	}
	return out
}

func idMapsFromPB(maps []*pb.IDMap) []layerfs.IDMap {
	var out []layerfs.IDMap
	for _, m := range maps {
		out = append(out, layerfs.IDMap{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetSize()})
	}
	return out
}

func prepareResultToPB(r *PrepareResult) *pb.PrepareResponse {
	out := &pb.PrepareResponse{Driver: r.Driver}
	for _, m := range r.Mounts {
		out.Mounts = append(out.Mounts, &pb.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options, Idmap: m.IDMap})
	}
	return out
}

func prepareResultFromPB(in *pb.PrepareResponse) *PrepareResult {
	r := &PrepareResult{Driver: in.GetDriver()}
	for _, m := range in.GetMounts() {
		r.Mounts = append(r.Mounts, Mount{Type: m.GetType(), Source: m.GetSource(), Target: m.GetTarget(), Options: m.GetOptions(), IDMap: m.GetIdmap()})
	}
	return r
}
