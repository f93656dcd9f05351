package sse

import (
	"errors"
	"fmt"
	"strings"

	"github.com/herald-sse/herald/pkg/broker"
)

// The wire form of a connection's position, sent in every id field and read
// back from Last-Event-ID.
//
// A one-topic stream uses the broker's position ID as it is: the id of an
// event is exactly the ID its Publish returned, on every replica.
//
// A multi-topic stream uses a composite cursor, versioned so later releases
// can recognise it: "h1" followed by "." and the position of each topic, in
// the sorted order of the stream's topics ("h1.3f9a1c2e-41.3f9a1c2e-7").
// Broker positions never contain '.', so the two forms cannot be confused.
const compositePrefix = "h1."

// UnknownPosition is the position handed to the broker for a topic whose
// place the client's cursor does not tell (another cursor format, another
// topic set). The broker answers it with a reset.
const UnknownPosition = "?"

// DefaultMaxCursorLen caps Last-Event-ID unless TopicHandler.MaxCursorLen says
// otherwise.
const DefaultMaxCursorLen = 4096

// ErrBadCursor: a Last-Event-ID that breaks the wire rules (too long, or a
// byte outside printable ASCII). Such a request gets 400.
var ErrBadCursor = errors.New("sse: malformed Last-Event-ID")

// checkCursor enforces the wire rules only: length and printable ASCII
// without spaces. A well-formed cursor the broker cannot place is not an
// error; it gets the reset event.
func checkCursor(id string, maxLen int) error {
	if len(id) > maxLen {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrBadCursor, len(id), maxLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte 0x%02x at offset %d (only printable ASCII is allowed)", ErrBadCursor, c, i)
		}
	}
	return nil
}

// parseCursor maps the client's last event ID onto topics (sorted, unique).
// An empty id means "start live"; an id that does not fit gives
// UnknownPosition for the topics it cannot place.
func parseCursor(topics []string, id string) broker.Cursor {
	if id == "" {
		return nil
	}
	c := make(broker.Cursor, len(topics))
	var parts []string
	switch {
	case strings.HasPrefix(id, compositePrefix):
		parts = strings.Split(id[len(compositePrefix):], ".")
	case strings.Contains(id, "."):
		// Another version of the composite form, or garbage: unknown.
	default:
		parts = []string{id}
	}
	if len(parts) != len(topics) {
		for _, t := range topics {
			c[t] = UnknownPosition
		}
		return c
	}
	for i, t := range topics {
		p := parts[i]
		if p == "" && len(topics) > 1 {
			// A composite never holds an empty place (appendCursor writes
			// UnknownPosition); reading one as "start live" would skip
			// that topic's events silently.
			p = UnknownPosition
		}
		c[t] = p
	}
	return c
}

// appendCursor appends the wire cursor for positions (aligned with the
// sorted topics of the stream). In a composite, a topic whose position is
// not known yet (its broker position has not arrived and the client sent
// none) is written as UnknownPosition: a resume from it gets a reset and the
// retained history for that topic, never a silent live start.
func appendCursor(dst []byte, positions []string) []byte {
	if len(positions) == 1 {
		return append(dst, positions[0]...)
	}
	dst = append(dst, compositePrefix[:len(compositePrefix)-1]...)
	for _, p := range positions {
		dst = append(dst, '.')
		if p == "" {
			p = UnknownPosition
		}
		dst = append(dst, p...)
	}
	return dst
}

// FormatCursor returns the Last-Event-ID that resumes a stream of topics at
// the given positions (a map from topic to broker position ID). Topics are
// sorted and deduplicated as the TopicHandler does. Useful to hand a client
// a resume point for a multi-topic stream.
func FormatCursor(c broker.Cursor) string {
	topics := make([]string, 0, len(c))
	for t := range c {
		topics = append(topics, t)
	}
	topics = canonicalTopics(topics)
	pos := make([]string, len(topics))
	for i, t := range topics {
		pos[i] = c[t]
	}
	return string(appendCursor(nil, pos))
}
