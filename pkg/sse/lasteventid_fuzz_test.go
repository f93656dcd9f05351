package sse

import (
	"strconv"
	"strings"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
)

// FuzzCursor: any Last-Event-ID is either refused by checkCursor (400) or
// mapped onto every topic of the stream, each to a position the id
// carried or to unknownPosition (which the broker answers with a reset);
// it never panics. Cursors the handler writes read back to their
// positions.
func FuzzCursor(f *testing.F) {
	for _, s := range []string{"", "3f9a-41", "h1.a-1.b-2", "h1.", "h1..", "h2.a.b", "h2.0cc175b9:a-1.92eb5ffe:b-2", "h2.:.:", "a.b", "?", "h1.?.?", strings.Repeat("h1.", 100), "id with space", "\xff"} {
		f.Add(s, uint8(2))
	}
	f.Fuzz(func(t *testing.T, id string, n uint8) {
		topics := make([]string, int(n%20)+1)
		for i := range topics {
			topics[i] = "t" + strconv.Itoa(i)
		}
		topics = canonicalTopics(topics)
		if err := checkCursor(id, DefaultMaxCursorLen); err != nil {
			if id != "" && len(id) <= DefaultMaxCursorLen && !strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
				t.Fatalf("refused a printable id %q: %v", id, err)
			}
			return
		}
		c := parseCursor(topics, id)
		if id == "" {
			if c != nil {
				t.Fatalf("empty id gave %v", c)
			}
			return
		}
		if len(c) != len(topics) {
			t.Fatalf("cursor %v does not cover %v", c, topics)
		}
		for _, tp := range topics {
			p, ok := c[tp]
			if !ok || (p != unknownPosition && !strings.Contains(id, p)) {
				t.Fatalf("topic %s: position %q not from id %q", tp, p, id)
			}
		}
		// Round trip through the writer's form when the positions are
		// broker-shaped.
		valid := true
		for _, p := range c {
			if p == "" || len(p) > broker.MaxIDLen || strings.ContainsAny(p, ".") {
				valid = false
			}
		}
		if valid {
			back := parseCursor(topics, FormatCursor(c))
			for tp, p := range c {
				if back[tp] != p {
					t.Fatalf("round trip of %v gave %v", c, back)
				}
			}
		}
	})
}
