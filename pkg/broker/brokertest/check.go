package brokertest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// MaxIDLen is the longest event ID or position the contract allows
// (broker.MaxIDLen).
const MaxIDLen = broker.MaxIDLen

// ValidID reports whether id is a well-formed event ID or position:
// 1-128 bytes of [0-9A-Za-z_-]. pkg/sse joins IDs of several topics with
// '.', so '.' is not allowed.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Reader accumulates the items of a subscription per topic. It is not safe
// for concurrent use: like the Subscription, one goroutine drives it.
type Reader struct {
	Sub broker.Subscription
	// Items holds every item taken so far, per topic, in arrival order.
	Items map[string][]*broker.Event
	// Ended is set once Take returned an error; Err is that error.
	Ended bool
	Err   error

	events map[string]int // KindEvent items per topic
	total  int            // KindEvent items of all topics
	buf    []*broker.Event
}

// NewReader returns a Reader of sub.
func NewReader(sub broker.Subscription) *Reader {
	return &Reader{Sub: sub, Items: map[string][]*broker.Event{}, events: map[string]int{}}
}

// Take takes whatever is pending, without waiting.
func (r *Reader) Take() {
	if r.Ended {
		return
	}
	items, err := r.Sub.Take(r.buf[:0])
	for _, e := range items {
		r.Items[e.Topic] = append(r.Items[e.Topic], e)
		if e.Kind == broker.KindEvent {
			r.events[e.Topic]++
			r.total++
		}
	}
	clear(items)
	r.buf = items[:0]
	if err != nil {
		r.Ended, r.Err = true, err
	}
}

// Until takes items until cond holds, the subscription ends, or timeout
// elapses, and reports whether cond holds. It waits on Ready, never sleeps.
func (r *Reader) Until(timeout time.Duration, cond func(*Reader) bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.Take()
		if cond(r) {
			return true
		}
		if r.Ended {
			return false
		}
		select {
		case <-r.Sub.Ready():
		case <-deadline.C:
			r.Take()
			return cond(r)
		}
	}
}

// UntilEnd takes items until the subscription ends or timeout elapses, and
// reports whether it ended.
func (r *Reader) UntilEnd(timeout time.Duration) bool {
	return r.Until(timeout, func(r *Reader) bool { return r.Ended })
}

// Count returns the number of KindEvent items taken for topic.
func (r *Reader) Count(topic string) int { return r.events[topic] }

// Total returns the number of KindEvent items taken for all topics.
func (r *Reader) Total() int { return r.total }

// LastID returns the ID of the last item taken for topic ("" if none).
func (r *Reader) LastID(topic string) string {
	items := r.Items[topic]
	if len(items) == 0 {
		return ""
	}
	return items[len(items)-1].ID
}

// HasPosition reports whether the KindPosition of topic has been taken.
func (r *Reader) HasPosition(topic string) bool {
	for _, e := range r.Items[topic] {
		if e.Kind == broker.KindPosition {
			return true
		}
	}
	return false
}

// String summarises what was taken, for failure messages.
func (r *Reader) String() string {
	var b strings.Builder
	topics := make([]string, 0, len(r.Items))
	for t := range r.Items {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	for _, t := range topics {
		fmt.Fprintf(&b, "[%s: %d items, %d events, last %q] ", t, len(r.Items[t]), r.events[t], r.LastID(t))
	}
	fmt.Fprintf(&b, "ended=%v err=%v", r.Ended, r.Err)
	return b.String()
}

// Collect takes items from sub until at least n KindEvent items (over all
// topics) arrived, and returns every item taken per topic. It fails the
// test if that does not happen within timeout or the subscription ends
// first.
func Collect(t testing.TB, sub broker.Subscription, n int, timeout time.Duration) map[string][]*broker.Event {
	t.Helper()
	r := NewReader(sub)
	if !r.Until(timeout, func(r *Reader) bool { return r.Total() >= n }) {
		t.Fatalf("Collect: wanted %d events within %v, got %s", n, timeout, r)
	}
	return r.Items
}

// Sequence is one topic's items split into the shape the contract
// prescribes: an optional KindReset, one KindPosition, then events.
type Sequence struct {
	Topic    string
	Reset    *broker.Event // nil if there was none
	Position *broker.Event // nil only if no item arrived
	Events   []*broker.Event
}

// IDs returns the IDs of the events.
func (s Sequence) IDs() []string {
	ids := make([]string, len(s.Events))
	for i, e := range s.Events {
		ids[i] = e.ID
	}
	return ids
}

// Last returns the cursor a consumer holds after the sequence: the last
// event's ID, or the position's if there was no event.
func (s Sequence) Last() string {
	if len(s.Events) > 0 {
		return s.Events[len(s.Events)-1].ID
	}
	if s.Position != nil {
		return s.Position.ID
	}
	return ""
}

// ParseSequence checks that items (of one topic, in arrival order) have the
// contract's shape — at most one KindReset, first, with a known Reason and
// no ID; exactly one KindPosition, next, with a valid ID; then KindEvent
// items with valid, distinct IDs — and splits them. An empty items is an
// error: every topic's sequence starts with a position.
func ParseSequence(topic string, items []*broker.Event) (Sequence, error) {
	s := Sequence{Topic: topic}
	i := 0
	for _, e := range items {
		if e == nil {
			return s, fmt.Errorf("topic %q: nil item", topic)
		}
		if e.Topic != topic {
			return s, fmt.Errorf("topic %q: item of topic %q in its sequence", topic, e.Topic)
		}
	}
	if i < len(items) && items[i].Kind == broker.KindReset {
		e := items[i]
		switch e.Reason {
		case broker.ReasonTruncated, broker.ReasonEpoch, broker.ReasonUnknown:
		default:
			return s, fmt.Errorf("topic %q: reset with unknown reason %q", topic, e.Reason)
		}
		if e.ID != "" {
			return s, fmt.Errorf("topic %q: reset carries ID %q, want none", topic, e.ID)
		}
		s.Reset = e
		i++
	}
	if i >= len(items) {
		return s, fmt.Errorf("topic %q: no KindPosition (got %d items)", topic, len(items))
	}
	if items[i].Kind != broker.KindPosition {
		return s, fmt.Errorf("topic %q: item %d is kind %d (ID %q), want KindPosition", topic, i, items[i].Kind, items[i].ID)
	}
	if !ValidID(items[i].ID) {
		return s, fmt.Errorf("topic %q: position ID %q is not 1-%d bytes of [0-9A-Za-z_-]", topic, items[i].ID, MaxIDLen)
	}
	s.Position = items[i]
	i++
	seen := map[string]bool{s.Position.ID: true}
	for ; i < len(items); i++ {
		e := items[i]
		if e.Kind != broker.KindEvent {
			return s, fmt.Errorf("topic %q: item %d is kind %d (ID %q, reason %q) after the position, want only events", topic, i, e.Kind, e.ID, e.Reason)
		}
		if !ValidID(e.ID) {
			return s, fmt.Errorf("topic %q: event ID %q is not 1-%d bytes of [0-9A-Za-z_-]", topic, e.ID, MaxIDLen)
		}
		if seen[e.ID] {
			return s, fmt.Errorf("topic %q: ID %q delivered twice (or equals the position)", topic, e.ID)
		}
		seen[e.ID] = true
		s.Events = append(s.Events, e)
	}
	return s, nil
}

// Want describes the sequence CheckSequence expects.
type Want struct {
	// Reset lists the acceptable reasons of a leading KindReset, which is
	// then required. Nil means no reset is allowed.
	Reset []broker.ResetReason
	// Position, if not empty, is the ID the KindPosition must carry.
	Position string
	// IDs are the expected event IDs, in log order.
	IDs []string
	// SuffixMin > 0 accepts, instead of all of IDs, any suffix of IDs at
	// least SuffixMin long (a history trimmed to an unknown length).
	SuffixMin int
}

// CheckSequence parses items (one topic, arrival order) with ParseSequence
// and checks them against w: reset, position, then exactly the events
// w.IDs — no gap, no duplicate, nothing extra. It reports failures with
// t.Errorf and returns the sequence and whether it matched.
func CheckSequence(t testing.TB, topic string, items []*broker.Event, w Want) (Sequence, bool) {
	t.Helper()
	s, err := ParseSequence(topic, items)
	if err != nil {
		t.Errorf("%v", err)
		return s, false
	}
	ok := true
	switch {
	case w.Reset == nil && s.Reset != nil:
		t.Errorf("topic %q: unexpected reset (reason %q)", topic, s.Reset.Reason)
		ok = false
	case w.Reset != nil && s.Reset == nil:
		t.Errorf("topic %q: no reset, want one with reason in %q", topic, w.Reset)
		ok = false
	case w.Reset != nil && !slices.Contains(w.Reset, s.Reset.Reason):
		t.Errorf("topic %q: reset reason %q, want one of %q", topic, s.Reset.Reason, w.Reset)
		ok = false
	}
	if w.Position != "" && s.Position.ID != w.Position {
		t.Errorf("topic %q: position %q, want %q", topic, s.Position.ID, w.Position)
		ok = false
	}
	got := s.IDs()
	want := w.IDs
	if w.SuffixMin > 0 && len(got) < len(want) {
		want = want[len(want)-len(got):]
		if len(got) < w.SuffixMin {
			t.Errorf("topic %q: %d events, want at least %d", topic, len(got), w.SuffixMin)
			ok = false
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("topic %q: events differ from the log\n%s", topic, diffIDs(got, want))
		ok = false
	}
	return s, ok
}

// CheckSequenceOK is CheckSequence reporting only whether it matched.
func CheckSequenceOK(t testing.TB, topic string, items []*broker.Event, w Want) bool {
	t.Helper()
	_, ok := CheckSequence(t, topic, items, w)
	return ok
}

// diffIDs describes the first difference between got and want.
func diffIDs(got, want []string) string {
	n := min(len(got), len(want))
	i := 0
	for i < n && got[i] == want[i] {
		i++
	}
	around := func(s []string) []string {
		lo, hi := max(0, i-2), min(len(s), i+3)
		return s[lo:hi]
	}
	return fmt.Sprintf("got %d events, want %d; first difference at index %d: got ...%q..., want ...%q...",
		len(got), len(want), i, around(got), around(want))
}
