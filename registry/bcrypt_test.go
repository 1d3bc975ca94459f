package registry

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// bcryptHash hashes password for an htpasswd file.
func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}
