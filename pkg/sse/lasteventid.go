package sse

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/herald-sse/herald/pkg/broker"
)

// The wire form of a connection's position, sent in every id field and read
// back from Last-Event-ID.
//
// A one-topic stream uses the broker's position ID as it is: the id of an
// event is exactly the ID its Publish returned, on every replica. Brokers
// put the topic into their positions (the conformance suite checks that a
// position of one topic handed to another gets a reset), so such an id
// resumes its own topic on any stream that follows it and nothing else.
//
// A multi-topic stream uses a composite cursor that states the topics it
// covers: "h2", then for each topic of the stream, in sorted order, "." and
// the topic's tag (8 hex digits of the FNV-1a hash of its name), ":" and its
// position ("h2.1a2b3c4d:3f9a1c2e-41.5e6f7a8b:3f9a1c2e-7"). Broker positions
// never contain '.', so the forms cannot be confused. A resume places each
// position on the topic whose tag it carries; a topic the cursor does not
// cover gets the reset event (broker.ReasonUnknown) and its retained
// history. So an app may keep its stored lastEventId while the user changes
// subscriptions: the topics it keeps resume exactly, the new ones start
// with a reset, none is ever placed on another topic's log.
//
// "h1" composite cursors (release 1: "h1" and the positions alone, in
// sorted topic order) are still read, by index, when they hold as many
// positions as the stream has topics; the brokers' topic check rejects a
// position that lands on another topic. Otherwise every topic gets the
// reset.
const (
	compositeV2 = "h2."
	compositeV1 = "h1."
	tagLen      = 8
)

// unknownPosition is the position handed to the broker for a topic whose
// place the client's cursor does not tell (another cursor format, a topic
// the cursor does not cover). The broker answers it with a reset.
const unknownPosition = "?"

// DefaultMaxCursorLen caps Last-Event-ID unless TopicHandler.MaxCursorLen says
// otherwise.
const DefaultMaxCursorLen = 4096

// MaxCursorLen returns the length of the longest Last-Event-ID a stream
// of n topics sends (every topic at an ID of broker.MaxIDLen bytes): the
// least TopicHandler.MaxCursorLen that lets every such stream resume.
func MaxCursorLen(n int) int {
	return len(compositeV2) + n*(tagLen+1+broker.MaxIDLen+1)
}

// errBadCursor: a Last-Event-ID that breaks the wire rules (too long, or a
// byte outside printable ASCII). Such a request gets 400.
var errBadCursor = errors.New("sse: malformed Last-Event-ID")

// checkCursor enforces the wire rules only: length and printable ASCII
// without spaces. A well-formed cursor the broker cannot place is not an
// error; it gets the reset event.
func checkCursor(id string, maxLen int) error {
	if len(id) > maxLen {
		return fmt.Errorf("%w: %d bytes, the limit is %d", errBadCursor, len(id), maxLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte 0x%02x at offset %d (only printable ASCII is allowed)", errBadCursor, c, i)
		}
	}
	return nil
}

// topicTag returns the tag of a topic in composite cursors: 8 lowercase hex
// digits of the 32-bit FNV-1a hash of its name.
func topicTag(topic string) string {
	h := fnv.New32a()
	h.Write([]byte(topic))
	const hexDigits = "0123456789abcdef"
	var b [tagLen]byte
	v := h.Sum32()
	for i := tagLen - 1; i >= 0; i-- {
		b[i] = hexDigits[v&0xf]
		v >>= 4
	}
	return string(b[:])
}

// cursorTags returns the "<tag>:" piece of every topic, as appendCursor
// writes it; nil for one topic, whose cursor is its position alone.
func cursorTags(topics []string) []string {
	if len(topics) < 2 {
		return nil
	}
	tags := make([]string, len(topics))
	for i, t := range topics {
		tags[i] = topicTag(t) + ":"
	}
	return tags
}

// parseCursor maps the client's last event ID onto topics (sorted, unique).
// An empty id means "start live". A topic the id does not cover gets
// unknownPosition (a reset).
func parseCursor(topics []string, id string) broker.Cursor {
	if id == "" {
		return nil
	}
	c := make(broker.Cursor, len(topics))
	for _, t := range topics {
		c[t] = unknownPosition
	}
	switch {
	case strings.HasPrefix(id, compositeV2):
		placeTagged(c, topics, id[len(compositeV2):])
	case strings.HasPrefix(id, compositeV1):
		parts := strings.Split(id[len(compositeV1):], ".")
		if len(parts) == len(topics) {
			for i, t := range topics {
				if parts[i] != "" {
					c[t] = parts[i]
				}
			}
		}
	case strings.Contains(id, "."):
		// Another version of the composite form, or garbage: unknown.
	default:
		// A one-topic id: a broker position, which knows its topic. Every
		// topic gets it; the broker resumes the topic it belongs to and
		// resets the others.
		for _, t := range topics {
			c[t] = id
		}
	}
	return c
}

// placeTagged sets, from the entries "<tag>:<position>" of an h2 cursor,
// the position of every topic whose tag the cursor carries. Entries are
// paired with topics by tag, in order among equal tags (two topics of a
// stream share a tag with probability 2^-32; they are written in sorted
// order and read back in it). A tag that the cursor holds a different
// number of times than the stream has topics with it places nothing, and a
// malformed entry is ignored: those topics keep unknownPosition.
func placeTagged(c broker.Cursor, topics []string, entries string) {
	byTag := make(map[string][]string, len(topics))
	for entries != "" {
		var e string
		e, entries, _ = strings.Cut(entries, ".")
		tag, pos, ok := strings.Cut(e, ":")
		if !ok || len(tag) != tagLen || pos == "" || !isLowerHex(tag) {
			continue
		}
		byTag[tag] = append(byTag[tag], pos)
	}
	if len(byTag) == 0 {
		return
	}
	stream := make(map[string][]string, len(topics))
	for _, t := range topics {
		tag := topicTag(t)
		stream[tag] = append(stream[tag], t)
	}
	for tag, ts := range stream {
		ps := byTag[tag]
		if len(ps) != len(ts) {
			continue
		}
		for i, t := range ts {
			c[t] = ps[i]
		}
	}
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// appendCursor appends the wire cursor for positions (aligned with the
// sorted topics of the stream and their cursorTags). In a composite, a
// topic whose position is not known yet (its broker position has not
// arrived and the client sent none) is written as unknownPosition: a resume
// from it gets a reset and the retained history for that topic, never a
// silent live start.
func appendCursor(dst []byte, tags, positions []string) []byte {
	if len(positions) == 1 {
		return append(dst, positions[0]...)
	}
	dst = append(dst, compositeV2[:len(compositeV2)-1]...)
	for i, p := range positions {
		dst = append(dst, '.')
		dst = append(dst, tags[i]...)
		if p == "" {
			p = unknownPosition
		}
		dst = append(dst, p...)
	}
	return dst
}

// FormatCursor returns the Last-Event-ID that resumes a stream of topics at
// the given positions (a map from topic to broker position ID). Topics are
// sorted and deduplicated as the TopicHandler does. Useful to hand a client
// a resume point for a multi-topic stream; a resume of a stream of other
// topics places the positions on the topics they belong to.
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
	return string(appendCursor(nil, cursorTags(topics), pos))
}
