// Package clip shortens what users typed before it is echoed in an error.
//
// A name or path of thousands of bytes, echoed whole, buries the message
// that says what is wrong with it (and fills logs); its first few dozen
// bytes and its length say enough to find it again.
package clip

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Keep is how many bytes of a long string Quote and Text keep.
const Keep = 64

// Quote returns s quoted as %q would, cut to its first Keep bytes (on a
// rune boundary) and followed by its length when it is longer.
func Quote(s string) string {
	if len(s) <= Keep {
		return strconv.Quote(s)
	}
	return strconv.Quote(prefix(s)) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// String is Quote without the quotes, for names printed bare.
func String(s string) string { return Cut(s, Keep) }

// Cut is String keeping up to n bytes, for text that is not typed by a
// user but read from a file (a member name in an archive, say), where a
// little more context than Keep helps.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return prefixN(s, n) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// maxWord is the longest run of non-space bytes Text leaves alone: longer
// than a digest or any path a person would type, far shorter than the
// names it is there to catch.
const maxWord = 256

// Text shortens every run of non-space bytes in msg longer than maxWord,
// as String does, and escapes control characters other than newline and
// tab as Go does in a quoted string. It is the last line of defence for
// messages built from errors of packages that echo what they were given
// whole (a path in an *os.PathError, say), and of names an image or an
// archive chose: an escape sequence in one must not reach a terminal.
func Text(msg string) string {
	return shorten(escapeControls(msg))
}

// Controls escapes every control character of s, newline and tab
// included, as Go does in a quoted string, and keeps the rest as it is:
// for a value printed whole (a label, an environment variable) that must
// neither reach a terminal as an escape sequence nor break a line.
func Controls(s string) string { return escape(s, isAnyControl) }

// escapeControls escapes msg's control characters but newline and tab.
func escapeControls(msg string) string { return escape(msg, isControl) }

func escape(msg string, isControl func(rune) bool) string {
	if !strings.ContainsFunc(msg, isControl) {
		return msg
	}
	var b strings.Builder
	for _, r := range msg {
		if isControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool {
	return r != '\n' && r != '\t' && isAnyControl(r)
}

func isAnyControl(r rune) bool { return unicode.IsControl(r) || r == utf8.RuneError }

func shorten(msg string) string {
	if len(msg) <= maxWord {
		return msg
	}
	var b strings.Builder
	for len(msg) > 0 {
		i := strings.IndexAny(msg, " \t\n")
		if i < 0 {
			i = len(msg)
		}
		if word := msg[:i]; len(word) > maxWord {
			// Punctuation that ends the word is the message's own
			// ("open PATH: ..."), kept after the cut.
			end := strings.TrimRight(word, ":,;")
			b.WriteString(String(end) + word[len(end):])
		} else {
			b.WriteString(word)
		}
		msg = msg[i:]
		j := 0
		for j < len(msg) && (msg[j] == ' ' || msg[j] == '\t' || msg[j] == '\n') {
			j++
		}
		b.WriteString(msg[:j])
		msg = msg[j:]
	}
	return b.String()
}

func prefix(s string) string { return prefixN(s, Keep) }

// prefixN is s cut to at most n bytes on a rune boundary; len(s) > n.
func prefixN(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
