package registry

import (
	"errors"
	"testing"
)

// uncomparable is an error whose type == cannot compare, as ggcr's
// transport returns when every ping of a registry fails.
type uncomparable []error

func (e uncomparable) Error() string { return "all pings failed" }

func TestClassifyUncomparableError(t *testing.T) {
	err := classify(uncomparable{errors.New("dial tcp: refused")})
	if err == nil || err.Error() != "all pings failed" {
		t.Fatalf("classify: %v", err)
	}
}
