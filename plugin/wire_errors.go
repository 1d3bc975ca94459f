package plugin

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/internal/clip"
	pb "github.com/berth-dev/berth/plugin/internal/pb/berth/plugin/v1"
)

// errorDomain is the ErrorInfo domain of berth's error reasons.
const errorDomain = "berth.dev"

// maxRemoteMessage bounds the text of a plugin's error berth keeps: the
// message is the plugin's to choose, and an error message is no place for
// a megabyte of it.
const maxRemoteMessage = 1024

// wireSentinel pairs a sentinel with its ErrorInfo reason and gRPC code.
type wireSentinel struct {
	err    error
	reason pb.ErrorReason
	code   codes.Code
}

// wireSentinels are the errors that keep their meaning across the wire,
// both ways.
var wireSentinels = []wireSentinel{
	{ErrNotFound, pb.ErrorReason_ERROR_REASON_NOT_FOUND, codes.NotFound},
	{ErrExists, pb.ErrorReason_ERROR_REASON_ALREADY_EXISTS, codes.AlreadyExists},
	{ErrUnsupported, pb.ErrorReason_ERROR_REASON_UNSUPPORTED, codes.Unimplemented},
	{ErrInvalid, pb.ErrorReason_ERROR_REASON_INVALID, codes.InvalidArgument},
}

// reasonName is the ErrorInfo reason for r: its enum name without the
// prefix, "NOT_FOUND".
func reasonName(r pb.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

// toStatus turns the error of a plugin's implementation into the status
// its call returns: a berth sentinel becomes its code with an ErrorInfo
// detail naming the reason, a context error its code, anything else
// Unknown. The message is err's text. Plugins' server glue returns
// toStatus(err) for every non-nil error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isOurs(err) {
		return err // a status already (a plugin that speaks gRPC itself)
	}
	for _, s := range wireSentinels {
		if errors.Is(err, s.err) {
			st := status.New(s.code, err.Error())
			if d, derr := st.WithDetails(&errdetails.ErrorInfo{Domain: errorDomain, Reason: reasonName(s.reason)}); derr == nil {
				st = d
			}
			return st.Err()
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// isOurs reports whether err is a remoteError, which has a GRPCStatus
// method but whose sentinel toStatus should look at instead.
func isOurs(err error) bool {
	var re *remoteError
	return errors.As(err, &re)
}

// A remoteError is a plugin's error seen on the host. Its text is the
// plugin's message, prefixed once with the plugin's name; errors.Is
// matches the sentinel the plugin meant (and the host-side aliases the
// adapter registered for it, e.g. layerfs.ErrNotFound), and GRPCStatus
// gives the status as it came.
//
// A remoteError and not fmt.Errorf("%s: %w", msg, sentinel): the plugin's
// message already ends in the sentinel's text ("rootfs x: not found"), and
// wrapping again would say it twice.
type remoteError struct {
	msg      string // "plugin NAME: message"
	sentinel error  // nil for an error with no meaning berth knows
	also     []error
	st       *status.Status
}

func (e *remoteError) Error() string { return e.msg }

func (e *remoteError) Unwrap() error { return e.sentinel }

func (e *remoteError) Is(target error) bool {
	for _, a := range e.also {
		if a == target {
			return true
		}
	}
	return false
}

func (e *remoteError) GRPCStatus() *status.Status { return e.st }

// sentinelOf is the sentinel st means: its berth.dev ErrorInfo reason if
// it has one, else its code (so that a plugin in a language without
// ErrorInfo helpers still means something), nil if neither says.
func sentinelOf(st *status.Status) error {
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != errorDomain {
			continue
		}
		for _, s := range wireSentinels {
			if info.GetReason() == reasonName(s.reason) {
				return s.err
			}
		}
	}
	for _, s := range wireSentinels {
		if st.Code() == s.code {
			return s.err
		}
	}
	switch st.Code() {
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	return nil
}

// remoteMessage is a plugin's message made fit for an error: control
// characters escaped (it may reach a terminal), cut to a sane length,
// with the plugin's name in front unless the plugin put it there itself.
func remoteMessage(name, msg string) string {
	msg = clip.Cut(clip.Text(msg), maxRemoteMessage)
	prefix := "plugin " + name + ": "
	if msg == "" {
		return prefix + "error without a message"
	}
	if strings.HasPrefix(msg, prefix) {
		return msg
	}
	return prefix + msg
}
