package clip

import (
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	long := strings.Repeat("a", 5000)
	for _, c := range []struct{ in, want string }{
		{"alpine", `"alpine"`},
		{strings.Repeat("b", Keep), `"` + strings.Repeat("b", Keep) + `"`},
		{long, `"` + strings.Repeat("a", Keep) + `"… (5000 bytes)`},
		// Cut on a rune boundary: é is two bytes, the 64th byte is the
		// first of one.
		{strings.Repeat("x", Keep-1) + strings.Repeat("é", 10), `"` + strings.Repeat("x", Keep-1) + `"… (83 bytes)`},
	} {
		if got := Quote(c.in); got != c.want {
			t.Errorf("Quote(%.20q…) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestText(t *testing.T) {
	long := "/" + strings.Repeat("d", 4999)
	msg := "open " + long + ": file name too long"
	got := Text(msg)
	want := "open /" + strings.Repeat("d", Keep-1) + "… (5000 bytes): file name too long"
	if got != want {
		t.Errorf("Text:\n got %s\nwant %s", got, want)
	}
	short := "image \"nope:1\": not found\n  with  spaces kept " + strings.Repeat("y", maxWord)
	if got := Text(short); got != short {
		t.Errorf("Text changed a message with no word longer than %d bytes: %q", maxWord, got)
	}
}

// An escape sequence or a carriage return in a name an archive chose
// reaches no terminal through an error; newlines of joined errors stay.
func TestTextEscapesControls(t *testing.T) {
	got := Text("member \"a\x1b[2Jb\rc\": refused\nsecond error")
	want := "member \"a\\x1b[2Jb\\rc\": refused\nsecond error"
	if got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
}

func TestControls(t *testing.T) {
	got := Controls("a\x1b[2Jb\rc\nd\te\u009bf \"g\\h\" é")
	want := "a\\x1b[2Jb\\rc\\nd\\te\\u009bf \"g\\h\" é"
	if got != want {
		t.Errorf("Controls = %q, want %q", got, want)
	}
}
