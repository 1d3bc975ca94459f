package layerfs

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/berth-dev/berth/internal/clip"
)

// The grammar of image names, tags and digests is the one registries use
// (the distribution reference grammar), so that names round-trip through
// docker-archive and OCI layout files unchanged.
var (
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	domainPart    = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
	domain        = domainPart + `(?:\.` + domainPart + `)*(?::[0-9]+)?`
	nameRE        = regexp.MustCompile(`^(?:` + domain + `/)?` + pathComponent + `(?:/` + pathComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	digestRE      = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

const maxNameLength = 255

// MaxReferenceLength is the longest reference the grammar allows: a name
// of 255 characters (the registries' limit), a tag of 128 and a digest.
// Anything longer is refused before it is parsed or looked up.
const MaxReferenceLength = maxNameLength + len(":") + 128 + len("@sha256:") + 64

// A Reference names an image in the store: a repository name with a tag
// ("alpine:3.20"), a name pinned to a manifest digest ("alpine@sha256:…"),
// or both.
type Reference struct {
	Name   string // repository, e.g. "alpine" or "registry.local:5000/team/app"
	Tag    string // "latest" when neither a tag nor a digest was given
	Digest string // "sha256:<hex>" or empty
}

// ParseReference parses s as NAME[:TAG][@DIGEST]. A name with neither tag
// nor digest gets the tag "latest".
func ParseReference(s string) (Reference, error) {
	if len(s) > MaxReferenceLength {
		return Reference{}, fmt.Errorf("%w %s: longer than %d bytes", ErrInvalidReference, clip.Quote(s), MaxReferenceLength)
	}
	var r Reference
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		if !digestRE.MatchString(r.Digest) {
			return Reference{}, fmt.Errorf("%w %s: digest must be sha256: and 64 lowercase hex digits", ErrInvalidReference, clip.Quote(s))
		}
	}
	// A colon after the last slash separates the tag; one before it belongs
	// to a registry's port.
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if !tagRE.MatchString(r.Tag) {
			return Reference{}, fmt.Errorf("%w %s: bad tag %s", ErrInvalidReference, clip.Quote(s), clip.Quote(r.Tag))
		}
	}
	r.Name = rest
	if r.Name == "" {
		return Reference{}, fmt.Errorf("%w %s: empty name", ErrInvalidReference, clip.Quote(s))
	}
	if len(r.Name) > maxNameLength {
		return Reference{}, fmt.Errorf("%w %s: name longer than %d characters", ErrInvalidReference, clip.Quote(s), maxNameLength)
	}
	if !nameRE.MatchString(r.Name) {
		return Reference{}, fmt.Errorf("%w %s: name must be lowercase letters, digits and separators (. _ - /)", ErrInvalidReference, clip.Quote(s))
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// String returns the reference in its canonical form.
func (r Reference) String() string {
	s := r.Name
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// nameList parses the name an image is to be given (by import, commit or
// tag), which cannot pin a digest; an empty name gives no names.
func nameList(name, what string) ([]string, error) {
	if name == "" {
		return nil, nil
	}
	r, err := ParseReference(name)
	if err != nil {
		return nil, err
	}
	if r.Digest != "" {
		return nil, fmt.Errorf("%w %s: %s cannot carry a digest", ErrInvalidReference, clip.Quote(name), what)
	}
	// The store keeps each name in a file of its own, escaped; the grammar
	// allows names and tags that together make a longer file name than
	// filesystems hold.
	if n := len(refFile(r.String())); n > maxFileName {
		return nil, fmt.Errorf("%w %s: too long for %s (%d bytes escaped, at most %d)", ErrInvalidReference, clip.Quote(name), what, n, maxFileName)
	}
	return []string{r.String()}, nil
}

// maxFileName is the longest file name Linux filesystems take (NAME_MAX).
const maxFileName = 255
