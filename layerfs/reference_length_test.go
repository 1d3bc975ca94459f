package layerfs

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// The longest reference the grammar allows parses; anything longer is
// refused before it is parsed or looked up, with a message that echoes
// only its start.
func TestReferenceLength(t *testing.T) {
	longest := strings.Repeat("n", maxNameLength) + ":" + strings.Repeat("t", 128) + "@sha256:" + strings.Repeat("0", 64)
	if len(longest) != MaxReferenceLength {
		t.Fatalf("the longest reference is %d bytes, MaxReferenceLength %d", len(longest), MaxReferenceLength)
	}
	if _, err := ParseReference(longest); err != nil {
		t.Errorf("the longest reference: %v", err)
	}
	s := newStore(t, nil)
	for _, ref := range []string{longest + "0", strings.Repeat("a", 5000), "sha256:" + strings.Repeat("a", 5000)} {
		_, perr := ParseReference(ref)
		_, ierr := s.Image(context.Background(), ref)
		for _, err := range []error{perr, ierr} {
			if !errors.Is(err, ErrInvalidReference) || !strings.Contains(err.Error(), "longer than 456 bytes") || len(err.Error()) > 200 {
				t.Errorf("a reference of %d bytes: %v, want a short ErrInvalidReference", len(ref), err)
			}
		}
	}
	// Short but wrong references are echoed whole, as before.
	if _, err := ParseReference("Bad"); err == nil || !strings.Contains(err.Error(), `"Bad"`) {
		t.Errorf("ParseReference(Bad): %v", err)
	}
}
