package faults

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// Origin says where a session's starting position for a topic came from.
type Origin int

// Origins of a session's cursor positions.
const (
	// FromNone: the cursor has no position for the topic (a subset
	// cursor, or a first subscription): the topic starts live.
	FromNone Origin = iota
	// FromOwn: the position the subscriber last held for this topic.
	FromOwn
	// FromStale: an older position of this topic, from an earlier session
	// (possibly trimmed since, or of an epoch Redis lost).
	FromStale
	// FromForeign: a position taken from another topic.
	FromForeign
	// FromGarbage: a string that is no position at all.
	FromGarbage
)

var originNames = [...]string{"none", "own", "stale", "foreign", "garbage"}

func (o Origin) String() string { return originNames[o] }

// Item is one subscription item and when the subscriber took it.
type Item struct {
	Ev *broker.Event
	At time.Time
}

// Session is one Subscribe call of a subscriber, until it closed or ended.
type Session struct {
	N      int // unique number, for messages
	Sub    int // subscriber
	Broker int
	Topics []string
	Cursor broker.Cursor
	Origin map[string]Origin // per topic of Topics
	// ForeignFrom names, per topic with FromForeign, the topic its
	// position was taken from.
	ForeignFrom map[string]string
	// CursorAt is, per topic with FromOwn or FromStale, when the
	// subscriber received that position. It matters for the empty-topic
	// position ("0-0-0"), which says nothing about the epochs after it.
	CursorAt map[string]time.Time
	// Shape says how the cursor's topics relate to Topics: "same",
	// "reordered", "subset", "superset", "fresh".
	Shape            string
	Opened, Returned time.Time // Subscribe called and returned
	Closed           time.Time // when it was closed or ended; zero if Final
	Items            []Item
	Err              error // what Take returned at the end, if it ended
	Final            bool  // still open when the run ended
}

// Publish is one publish attempt.
type Publish struct {
	Topic      string
	Data       string
	Via        int // broker index, or -1 for FCALL from a direct client
	ID         string
	Err        error // nil if acknowledged
	Start, End time.Time
}

// Window is a time interval of one broker (-1: all brokers).
type Window struct {
	Broker     int
	Start, End time.Time
	What       string
}

func (w Window) covers(b int) bool { return w.Broker < 0 || w.Broker == b }

// Run is everything a schedule produced, for Check.
type Run struct {
	Record    *Record
	Sessions  []*Session
	Publishes []Publish
	// Closes are the intervals during which a broker was being closed.
	Closes []Window
	// Live are the intervals during which every event must reach every
	// started, open subscriber of the broker within LiveBound of its
	// publish: the broker can reach Redis on a new connection.
	Live      []Window
	LiveBound time.Duration
	// FinalWant is, per topic, the log's last entry when the publishers
	// stopped: every Final session must have received it.
	FinalWant map[string]string
}

// Violation is one broken property.
type Violation struct {
	Class   string
	Topic   string
	Session int // 0 if not about a session
	Detail  string
}

func (v Violation) String() string {
	s := v.Class
	if v.Session > 0 {
		s += fmt.Sprintf(" [session %d]", v.Session)
	}
	if v.Topic != "" {
		s += fmt.Sprintf(" [topic %s]", v.Topic)
	}
	return s + ": " + v.Detail
}

// Result is what Check found.
type Result struct {
	Violations []Violation
	Deliveries int            // events checked against the log
	Resets     map[string]int // "<reason>/<cause>" -> count
	Published  int
	Acked      int
	Sessions   int
}

// Check checks the run's sessions and publishes against the record:
//
//   - every session's items of every topic are, segment by segment, a
//     KindPosition then exactly the topic's log after it: contiguous, once,
//     in order, with the published data;
//   - a KindReset starts a segment only where history was really lost after
//     the position it interrupts (the epoch lost, entries after it
//     trimmed) or the cursor could not be placed (foreign, garbage), and a
//     cursor that cannot be placed always gets one; after a reset the
//     sequence starts no later than the oldest entry still retained;
//   - a position the session supplied and the broker honoured without a
//     reset is exactly that position; a live start does not miss events
//     published after Subscribe returned;
//   - sessions open at the end received the whole log; in Live windows
//     events arrive within LiveBound;
//   - every acknowledged publish is in the log exactly once, under its ID,
//     no publish is in the log twice, and a publish racing a broker's Close
//     fails with broker.ErrClosed.
func Check(run *Run) Result {
	c := &checker{run: run, res: Result{Resets: map[string]int{}}}
	c.res.Violations = append(c.res.Violations, run.Record.Anomalies()...)
	for _, s := range run.Sessions {
		c.session(s)
	}
	c.publishes()
	c.res.Sessions = len(run.Sessions)
	return c.res
}

type checker struct {
	run *Run
	res Result
}

func (c *checker) fail(s *Session, topic, class, format string, args ...any) {
	v := Violation{Class: class, Topic: topic, Detail: fmt.Sprintf(format, args...)}
	if s != nil {
		v.Session = s.N
		v.Detail += fmt.Sprintf(" (session on broker %d, topics %q, cursor %v, origin %s, shape %s, opened %s, closed %s, err %v)",
			s.Broker, s.Topics, s.Cursor, s.Origin[topic], s.Shape, s.Opened.Format(timeFmt), fmtTime(s.Closed), s.Err)
	}
	c.res.Violations = append(c.res.Violations, v)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(timeFmt)
}

func (c *checker) session(s *Session) {
	by := map[string][]Item{}
	for _, it := range s.Items {
		if it.Ev == nil {
			c.fail(s, "", "bad-shape", "nil item")
			return
		}
		by[it.Ev.Topic] = append(by[it.Ev.Topic], it)
	}
	for topic := range by {
		if !slices.Contains(s.Topics, topic) {
			c.fail(s, topic, "bad-shape", "items of a topic the session did not subscribe to")
		}
	}
	for _, t := range s.Topics {
		c.sequence(s, t, by[t])
	}
}

// place locates a position in the topic's log: its epoch (nil for the
// position before everything, "0-0-0") and the index of the entry after it.
func place(l *TopicLog, id string) (*Epoch, int, error) {
	epoch, sid, ok := SplitID(id)
	if !ok {
		return nil, 0, fmt.Errorf("position %q is not <epoch>-<ms>-<seq>", id)
	}
	if isNoEpoch(epoch) {
		if sid != (StreamID{}) {
			return nil, 0, fmt.Errorf("position %q: no epoch but a stream ID", id)
		}
		return nil, 0, nil
	}
	e := l.epoch(epoch)
	if e == nil {
		return nil, 0, fmt.Errorf("position %q: the topic's log never had epoch %q", id, epoch)
	}
	return e, e.next(sid), nil
}

// find returns the epoch and index of the entry with the full ID id.
func find(l *TopicLog, id string) (*Epoch, int) {
	epoch, sid, ok := SplitID(id)
	if !ok {
		return nil, -1
	}
	e := l.epoch(epoch)
	if e == nil {
		return nil, -1
	}
	return e, e.index(sid)
}

// anyLoss reports whether some epoch of l was lost, or trimmed, within
// [from, to].
func anyLoss(l *TopicLog, from, to time.Time) bool {
	for _, e := range l.Epochs {
		if e.lostBy(to) && !e.LostAt.Before(from) {
			return true
		}
		for _, tr := range e.trims {
			if !tr.at.Before(from) && !tr.at.After(to) {
				return true
			}
		}
	}
	return false
}

// lostAfter says whether history after position (ep, k) was lost by t, and
// how. For the empty-topic position (ep nil), taken at since, history was
// lost if an epoch was lost or trimmed after since: no stream existed when
// the position was taken, so that epoch began after it.
func lostAfter(l *TopicLog, ep *Epoch, k int, since, t time.Time) (string, bool) {
	if ep == nil {
		for _, e := range l.Epochs {
			if e.lostBy(t) && e.LostAt.After(since) {
				return "epoch-lost", true
			}
			for _, tr := range e.trims {
				if tr.keep > 0 && tr.at.After(since) && !tr.at.After(t) {
					return "trimmed", true
				}
			}
		}
		return "", false
	}
	if ep.lostBy(t) {
		return "epoch-lost", true
	}
	if ep.retainedFrom(t) > k {
		return "trimmed", true
	}
	return "", false
}

// resetRequired says why the first segment of topic must start with a
// reset ("" if it need not).
func resetRequired(l *TopicLog, s *Session, topic string) string {
	switch s.Origin[topic] {
	case FromForeign:
		return fmt.Sprintf("a position of topic %q", s.ForeignFrom[topic])
	case FromGarbage:
		return "a cursor that is no position"
	case FromOwn, FromStale:
		ep, k, err := place(l, s.Cursor[topic])
		if err != nil {
			return "a position the log never had: " + err.Error()
		}
		if why, lost := lostAfter(l, ep, k, s.CursorAt[topic], s.Opened); lost {
			return "history after the cursor was gone before Subscribe (" + why + ")"
		}
	}
	return ""
}

// resetCause says whether a reset taken at time at is justified, and by
// what. ep, k: the position it interrupts (for the first segment, the
// cursor's).
func resetCause(l *TopicLog, s *Session, topic string, first bool, ep *Epoch, k int, posAt, at time.Time) (string, bool) {
	if first {
		switch s.Origin[topic] {
		case FromForeign:
			return "foreign", true
		case FromGarbage:
			return "garbage", true
		case FromNone:
			if anyLoss(l, s.Opened, at) {
				return "lost-while-starting", true
			}
			return "", false
		}
		var err error
		ep, k, err = place(l, s.Cursor[topic])
		if err != nil {
			return "unplaceable", true
		}
		posAt = s.CursorAt[topic]
	}
	return lostAfter(l, ep, k, posAt, at)
}

func (c *checker) sequence(s *Session, topic string, items []Item) {
	l := c.run.Record.Topic(topic)
	if len(items) == 0 {
		if s.Final {
			c.fail(s, topic, "incomplete", "no item at all by the end of the run")
		}
		return
	}
	var (
		ep      *Epoch // epoch of the current position; nil: before everything
		k       int    // index in ep of the next expected entry
		started bool   // a position was taken
		posAt   time.Time
		recv    = map[string]time.Time{}
	)
	first := true
	for i := 0; i < len(items); {
		var reset *Item
		if items[i].Ev.Kind == broker.KindReset {
			reset = &items[i]
			i++
			switch reset.Ev.Reason {
			case broker.ReasonTruncated, broker.ReasonEpoch, broker.ReasonUnknown:
			default:
				c.fail(s, topic, "bad-shape", "reset with unknown reason %q", reset.Ev.Reason)
				return
			}
			cause, ok := resetCause(l, s, topic, first, ep, k, posAt, reset.At)
			if !ok {
				where := "the cursor " + s.Cursor[topic]
				if !first {
					where = "position " + lastID(items[:i-1])
				}
				c.fail(s, topic, "false-reset", "reset %q at %s after %s, but no history after it was lost", reset.Ev.Reason, reset.At.Format(timeFmt), where)
				return
			}
			c.res.Resets[string(reset.Ev.Reason)+"/"+cause]++
			if i == len(items) {
				return
			}
		} else if first {
			if why := resetRequired(l, s, topic); why != "" {
				c.fail(s, topic, "missing-reset", "cursor %q is %s, but the sequence starts without a reset at position %q", s.Cursor[topic], why, items[i].Ev.ID)
				return
			}
		}
		it := items[i]
		switch {
		case it.Ev.Kind == broker.KindPosition:
			i++
			if !first && reset == nil && it.Ev.ID != lastID(items[:i-1]) {
				c.fail(s, topic, "position-jump", "position %q after %q without a reset", it.Ev.ID, lastID(items[:i-1]))
				return
			}
			if first && reset == nil && (s.Origin[topic] == FromOwn || s.Origin[topic] == FromStale) && it.Ev.ID != s.Cursor[topic] {
				c.fail(s, topic, "position-not-cursor", "starts at %q without a reset, cursor was %q", it.Ev.ID, s.Cursor[topic])
				return
			}
			var err error
			ep, k, err = place(l, it.Ev.ID)
			if err != nil {
				c.fail(s, topic, "unknown-position", "%v", err)
				return
			}
			if reset != nil && ep != nil {
				if r := ep.retainedFrom(reset.At); k > r && r < len(ep.Entries) {
					c.fail(s, topic, "reset-skips-history", "after reset %q the sequence starts at %q, but %s was still retained", reset.Ev.Reason, it.Ev.ID, ep.Entries[r].ID)
					return
				}
			}
			if first && reset == nil && s.Origin[topic] == FromNone && ep != nil {
				// Nothing published after Subscribe returned may be
				// before the starting position (Redis stamps entries with
				// the same clock; 2 ms of slack for rounding).
				limit := uint64(s.Returned.UnixMilli()) + 2
				for j := k - 1; j >= 0 && ep.Entries[j].SID.Ms > limit; j-- {
					c.fail(s, topic, "live-start-misses", "live start at %q skips %s, published after Subscribe returned at %s", it.Ev.ID, ep.Entries[j].ID, s.Returned.Format(timeFmt))
					return
				}
			}
			started, posAt, first = true, it.At, false
		case first || reset != nil:
			c.fail(s, topic, "bad-shape", "item %d is kind %d (ID %q), want a KindPosition", i, it.Ev.Kind, it.Ev.ID)
			return
		}
		for ; i < len(items) && items[i].Ev.Kind == broker.KindEvent; i++ {
			ev := items[i].Ev
			if ep == nil {
				e2, j := find(l, ev.ID)
				if e2 == nil || j < 0 {
					c.fail(s, topic, "unknown-event", "event %q is not in the topic's log", ev.ID)
					return
				}
				if j != 0 {
					c.fail(s, topic, "gap", "first event %q after the empty position is entry %d of its epoch: %d skipped", ev.ID, j, j)
					return
				}
				ep, k = e2, 0
			}
			if k >= len(ep.Entries) || ep.Entries[k].ID != ev.ID {
				c.mismatch(s, topic, l, ep, k, ev, items[:i])
				return
			}
			if ep.Entries[k].Data != ev.Data {
				c.fail(s, topic, "wrong-data", "event %q carries %q, the log has %q", ev.ID, ev.Data, ep.Entries[k].Data)
				return
			}
			recv[ev.ID] = items[i].At
			k++
			c.res.Deliveries++
		}
	}
	if want := c.run.FinalWant[topic]; s.Final && want != "" {
		e, j := find(l, want)
		switch {
		case e == nil || j < 0:
			c.fail(s, topic, "incomplete", "the log's end %q is not in the record", want)
			return
		case ep == nil:
			c.fail(s, topic, "incomplete", "ends before the log's first entry, the log ends at %q", want)
			return
		case ep != e:
			c.fail(s, topic, "incomplete", "ends in epoch %q, the log ends at %q", ep.Name, want)
			return
		case k <= j:
			c.fail(s, topic, "incomplete", "ends %d entries short of the log's end %q (next missing %q)", j+1-k, want, e.Entries[k].ID)
			return
		}
	}
	if started {
		c.liveness(s, topic, l, posAt, recv)
	}
}

func lastID(items []Item) string {
	for i := len(items) - 1; i >= 0; i-- {
		if items[i].Ev.ID != "" {
			return items[i].Ev.ID
		}
	}
	return ""
}

// mismatch classifies an event that is not the expected next entry.
func (c *checker) mismatch(s *Session, topic string, l *TopicLog, ep *Epoch, k int, ev *broker.Event, before []Item) {
	want := "the end of epoch " + ep.Name
	if k < len(ep.Entries) {
		want = ep.Entries[k].ID
	}
	e2, j := find(l, ev.ID)
	switch {
	case e2 == nil || j < 0:
		c.fail(s, topic, "unknown-event", "event %q is not in the topic's log (expected %s)", ev.ID, want)
	case e2 != ep:
		c.fail(s, topic, "silent-epoch-switch", "event %q of epoch %q follows %q of epoch %q without a reset (expected %s; epoch %q lost at %s)",
			ev.ID, e2.Name, lastID(before), ep.Name, want, ep.Name, fmtTime(ep.LostAt))
	case j > k:
		c.fail(s, topic, "gap", "event %q after %q: %d entries skipped, from %s", ev.ID, lastID(before), j-k, want)
	default:
		for _, it := range before {
			if it.Ev.ID == ev.ID {
				c.fail(s, topic, "duplicate", "event %q delivered again (expected %s)", ev.ID, want)
				return
			}
		}
		c.fail(s, topic, "out-of-order", "event %q (entry %d) after entry %d", ev.ID, j, k-1)
	}
}

// liveness checks the Live windows of the session's broker: every entry
// published in a window, after the session's position arrived and at least
// LiveBound before the session closed and the window ended, arrived within
// LiveBound.
func (c *checker) liveness(s *Session, topic string, l *TopicLog, posAt time.Time, recv map[string]time.Time) {
	d := c.run.LiveBound
	if d <= 0 {
		return
	}
	end := s.Closed
	if end.IsZero() {
		end = time.Unix(1<<40, 0)
	}
	for _, w := range c.run.Live {
		if !w.covers(s.Broker) {
			continue
		}
		from := maxTime(w.Start, posAt)
		to := minTime(w.End, end).Add(-d)
		if !from.Before(to) {
			continue
		}
		for _, e := range l.Epochs {
			lo := sort.Search(len(e.Entries), func(i int) bool { return e.Entries[i].SID.Ms > uint64(from.UnixMilli()) })
			for _, en := range e.Entries[lo:] {
				p := time.UnixMilli(int64(en.SID.Ms))
				if p.After(to) {
					break
				}
				got, ok := recv[en.ID]
				if ok && !got.After(p.Add(d)) {
					continue
				}
				late := "never"
				if ok {
					late = fmt.Sprintf("after %v", got.Sub(p).Round(time.Millisecond))
				}
				c.fail(s, topic, "deaf", "event %q published at %s during %s delivered %s (bound %v)", en.ID, p.Format(timeFmt), w.What, late, d)
				return
			}
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (c *checker) publishes() {
	type key struct{ topic, data string }
	occ := map[key][]Entry{}
	for _, l := range c.run.Record.topics {
		for _, e := range l.Epochs {
			for _, en := range e.Entries {
				k := key{l.Name, en.Data}
				occ[k] = append(occ[k], en)
			}
		}
	}
	dup := map[key]bool{}
	for _, p := range c.run.Publishes {
		c.res.Published++
		k := key{p.Topic, p.Data}
		o := occ[k]
		if len(o) > 1 && !dup[k] {
			dup[k] = true
			ids := make([]string, len(o))
			for i, e := range o {
				ids[i] = e.ID
			}
			c.fail(nil, p.Topic, "dup-publish", "data %q is in the log %d times: %s (publish via %s: id %q, err %v)", p.Data, len(o), strings.Join(ids, ", "), via(p.Via), p.ID, p.Err)
		}
		if p.Err == nil {
			c.res.Acked++
			switch {
			case len(o) == 0:
				c.fail(nil, p.Topic, "lost-ack", "publish of %q via %s acknowledged as %q at %s is not in the log", p.Data, via(p.Via), p.ID, p.End.Format(timeFmt))
			case o[0].ID != p.ID:
				c.fail(nil, p.Topic, "ack-mismatch", "publish of %q via %s acknowledged as %q, the log has it as %q", p.Data, via(p.Via), p.ID, o[0].ID)
			}
			continue
		}
		if p.Via >= 0 && !errors.Is(p.Err, broker.ErrClosed) && strings.Contains(p.Err.Error(), "closed") {
			for _, w := range c.run.Closes {
				if w.Broker == p.Via && !p.End.Before(w.Start) && !p.Start.After(w.End) {
					c.fail(nil, p.Topic, "close-error", "publish via broker %d racing its Close (from %s) failed with %q, want broker.ErrClosed", p.Via, w.Start.Format(timeFmt), p.Err)
					break
				}
			}
		}
	}
}

func via(b int) string {
	if b < 0 {
		return "FCALL"
	}
	return fmt.Sprintf("broker %d", b)
}
