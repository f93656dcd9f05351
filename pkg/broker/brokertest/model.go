package brokertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"pgregory.net/rapid"
)

// ModelOptions configure RunModel.
type ModelOptions struct {
	// HistorySize is the history of every instance; 0 means 4, small so
	// that cursors fall out of the history after a few publishes.
	HistorySize int

	// Restart, if set, returns an instance of a new incarnation: the
	// storage of the earlier instances of t is lost, like a Redis restarted
	// without persistence. RunModel closes the earlier instances first.
	// When nil, Factory.New is used if Factory.SharedStorage is unset
	// (every instance has its own storage, so a new one is a restart), and
	// the model does not restart otherwise.
	Restart func(t testing.TB, o Options) broker.Broker

	// Replicas is the number of instances sharing storage the model
	// publishes and subscribes through when Factory.SharedStorage is set;
	// 0 means 2. Ignored without SharedStorage.
	Replicas int

	// MaxSubscriptions bounds the subscriptions open at once; 0 means 4.
	MaxSubscriptions int

	// MaxChecks, if positive, caps the number of checks below rapid's
	// -rapid.checks, for brokers whose checks are slow (the later checks
	// pass at once; once one failed, rapid's shrinking runs unbounded).
	MaxChecks int
}

// RunModel is a property-based state-machine test (pgregory.net/rapid) of
// the broker made by f against a small reference model: per topic an ordered
// log of events with a retained window, and an incarnation that a restart
// replaces. Each check runs a random sequence of actions — publish, publish a
// burst that trims the history, subscribe to 1-3 of 4 topics with a cursor
// built from anything the test has seen, close a subscription, restart —
// and after every action checks every open subscription, per topic:
//
//   - a topic missing from the cursor (or with an empty position) starts
//     live: a KindPosition for the head, then only later events;
//   - a position of the same topic and incarnation that the history still
//     covers resumes exactly: no reset, the position, then every later
//     event, once, in order;
//   - otherwise a KindReset comes first — "truncated" for a position of the
//     same topic and incarnation older than the history, "epoch" for one of
//     an earlier incarnation, "unknown-cursor" for garbage and for a
//     position taken from another topic ("epoch" is accepted there too, and
//     for garbage that looks like a position) — then a KindPosition just
//     before the oldest retained event and exactly the retained history and
//     live events. A position is never placed on a topic it was not taken
//     from. (A position whose own event was the last one trimmed may be
//     resumed exactly or get a "truncated" reset: nothing after it is lost,
//     and a broker may not be able to tell.)
//
// Every position ID the broker reports must mean one place of one topic: the
// same string may not stand for two positions. The number of checks and
// actions come from rapid's flags (-rapid.checks, default 100; -rapid.steps,
// default 30; both smaller with -short); a failure prints the smallest action
// sequence rapid found, and -rapid.seed reproduces it.
//
// RunModel does not run in parallel and leaves nothing running: every
// instance and subscription of a check is closed at its end.
func RunModel(t *testing.T, f Factory, o ModelOptions) {
	t.Helper()
	if f.New == nil {
		t.Fatal("brokertest: Factory.New is nil")
	}
	if f.Timeout <= 0 {
		f.Timeout = 10 * time.Second
	}
	if o.HistorySize == 0 {
		o.HistorySize = 4
	}
	if o.Replicas <= 0 || !f.SharedStorage {
		o.Replicas = 1
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = 4
	}
	restart := o.Restart
	if restart == nil && !f.SharedStorage {
		restart = f.New
	}
	checks, failed, reported := 0, false, false
	rapid.Check(t, func(rt *rapid.T) {
		if o.MaxChecks > 0 && !failed && checks >= o.MaxChecks {
			return
		}
		checks++
		ok := false
		defer func() { failed = failed || !ok }()
		m := newModel(t, rt, f, o, restart)
		m.reported = &reported
		rt.Repeat(m.actions())
		m.finish()
		ok = true
	})
}

// modelTopics is the number of topics of one check.
const modelTopics = 4

// mEvent is a published event as the model knows it.
type mEvent struct {
	id  string
	msg broker.Message
}

// mTopic is one topic of the current incarnation.
type mTopic struct {
	name string
	log  []mEvent // every event of the incarnation: seq i+1 is log[i]
	// lo: the events with seq <= lo are out of the history. Exact unless
	// Factory.ApproxTrim, where it is the highest start observed (the
	// history keeps at least the last HistorySize events, maybe more).
	lo int
}

func (tp *mTopic) head() int { return len(tp.log) }

// mPos is a place in a topic's log: after event seq (0: before the first)
// of incarnation inc.
type mPos struct {
	topic string
	inc   int
	seq   int
}

func (p mPos) String() string { return fmt.Sprintf("%s@%d#%d", short(p.topic), p.inc, p.seq) }

// short is the letter that tells a check's topics apart, for logs.
func short(topic string) string { return topic[strings.LastIndexByte(topic, '-')+1:] }

// mEntry is one position the test can hand a broker: the ID and, when it
// is one the broker reported, what it means.
type mEntry struct {
	id  string
	pos *mPos // nil: garbage
	// lookalike: garbage shaped like a position, which a broker may take
	// for one of a lost epoch.
	lookalike bool
}

// garbage are cursors no broker issued: "unknown-cursor", or also "epoch"
// for the lookalikes.
var garbage = []mEntry{
	{id: "zz"},
	{id: "?"},
	{id: "h1.a.b"},
	{id: "-"},
	{id: "é\n"},
	{id: "9-9", lookalike: true},
	{id: "00000000-1", lookalike: true},
	{id: "1-1-1", lookalike: true},
	{id: "zzzzzzzz-0", lookalike: true},
}

// mSub is an open subscription and what the model expects of it.
type mSub struct {
	n      int // number, for logs
	topics []string
	r      *Reader
	want   map[string]*mWant
}

// mWant is what one topic of a subscription must deliver.
type mWant struct {
	reasons []broker.ResetReason // a reset with one of these reasons is required; nil: none allowed
	// maybeTruncated: the history may or may not cover from (ApproxTrim,
	// or from is the last event trimmed): a "truncated" reset followed by
	// the retained history is allowed, not required.
	maybeTruncated bool
	from           int // the seq to continue after when there is no reset
	headAt, loAt   int // the topic's head and (exact) lo when subscribing
	start          int // the seq the sequence continues after; -1 until known
}

type model struct {
	t        *testing.T
	rt       *rapid.T
	tb       testing.TB
	f        Factory
	o        ModelOptions
	restart  func(testing.TB, Options) broker.Broker
	reported *bool // the first failure of the RunModel was logged

	inc       int
	instances []broker.Broker
	topics    []*mTopic
	names     []string
	pool      []mEntry            // every position the broker reported
	held      []map[string]mEntry // cursors of closed subscriptions
	ids       map[[2]string]mPos  // (topic, ID) -> its meaning
	published map[[2]string]int   // (topic, event ID) -> seq, current incarnation
	subs      []*mSub
	nsub      int
	payloads  *rapid.Generator[broker.Message]
}

func newModel(t *testing.T, rt *rapid.T, f Factory, o ModelOptions, restart func(testing.TB, Options) broker.Broker) *model {
	m := &model{
		t: t, rt: rt, tb: rapidTB{TB: t, rt: rt}, f: f, o: o, restart: restart,
		ids:       map[[2]string]mPos{},
		published: map[[2]string]int{},
	}
	run := rand.Uint64()
	for i := range modelTopics {
		name := fmt.Sprintf("m%016x-%c", run, 'a'+i)
		m.names = append(m.names, name)
		m.topics = append(m.topics, &mTopic{name: name})
	}
	for range o.Replicas {
		m.instances = append(m.instances, f.New(m.tb, m.options()))
	}
	piece := rapid.SampledFrom([]string{"", "x", "hello world", "\n", "\r\n", "\r", "data: x", " lead", "é∑", "\x00", "{}"})
	m.payloads = rapid.Custom(func(rt *rapid.T) broker.Message {
		typ := rapid.SampledFrom([]string{"", "message", "t1", "update.v2"}).Draw(rt, "type")
		parts := rapid.SliceOfN(piece, 0, 4).Draw(rt, "data")
		return broker.Message{Type: typ, Data: strings.Join(parts, "")}
	})
	return m
}

func (m *model) options() Options { return Options{HistorySize: m.o.HistorySize} }

func (m *model) actions() map[string]func(*rapid.T) {
	a := map[string]func(*rapid.T){
		"publish":   m.publish,
		"trim":      m.trim,
		"subscribe": m.subscribe,
		"close":     m.close,
		"":          m.check,
	}
	if m.restart != nil {
		a["restart"] = m.restartAction
	}
	return a
}

func (m *model) instance(rt *rapid.T) (int, broker.Broker) {
	i := 0
	if len(m.instances) > 1 {
		i = rapid.IntRange(0, len(m.instances)-1).Draw(rt, "instance")
	}
	return i, m.instances[i]
}

func (m *model) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), m.f.Timeout)
}

// publishTo publishes msg to topic k and updates the model.
func (m *model) publishTo(rt *rapid.T, k int, msg broker.Message) {
	i, b := m.instance(rt)
	tp := m.topics[k]
	ctx, cancel := m.ctx()
	id, err := b.Publish(ctx, tp.name, msg)
	cancel()
	if err != nil {
		rt.Fatalf("Publish(%s) on instance %d: %v", tp.name, i, err)
	}
	if !ValidID(id) {
		rt.Fatalf("Publish(%s) returned ID %q: want 1-%d bytes of [0-9A-Za-z_-]", tp.name, id, MaxIDLen)
	}
	tp.log = append(tp.log, mEvent{id: id, msg: msg})
	seq := tp.head()
	m.learn(rt, tp.name, id, mPos{tp.name, m.inc, seq})
	m.published[[2]string{tp.name, id}] = seq
	if !m.f.ApproxTrim && m.o.HistorySize > 0 {
		tp.lo = max(tp.lo, seq-m.o.HistorySize)
	}
	rt.Logf("published %s -> %q (#%d)", short(tp.name), id, seq)
}

// learn records that id, reported for topic, means p.
func (m *model) learn(rt *rapid.T, topic, id string, p mPos) {
	key := [2]string{topic, id}
	if q, ok := m.ids[key]; ok {
		if q != p {
			m.fail(rt, "publish", violationf("one ID stands for two positions", "topic %s: ID %q stands for %v and %v", short(topic), id, q, p))
		}
		return
	}
	m.ids[key] = p
	m.pool = append(m.pool, mEntry{id: id, pos: &p})
}

func (m *model) publish(rt *rapid.T) {
	k := rapid.IntRange(0, modelTopics-1).Draw(rt, "topic")
	m.publishTo(rt, k, m.payloads.Draw(rt, "message"))
}

// trim publishes more events than the history holds to one topic.
func (m *model) trim(rt *rapid.T) {
	k := rapid.IntRange(0, modelTopics-1).Draw(rt, "topic")
	for i := range m.o.HistorySize + 1 {
		m.publishTo(rt, k, broker.Message{Type: "burst", Data: fmt.Sprint(i)})
	}
}

// cursorChoice is how one topic of a new subscription gets its position.
const (
	cMissing = iota // not in the cursor: live
	cEmpty          // "": live
	cOwn            // a position reported for this topic (maybe stale, maybe of an earlier incarnation)
	cForeign        // a position reported for another topic
	cGarbage        // something no broker issued
	cChoices
)

func (m *model) subscribe(rt *rapid.T) {
	if len(m.subs) >= m.o.MaxSubscriptions {
		rt.Skip("enough subscriptions")
	}
	idx := rapid.SliceOfNDistinct(rapid.IntRange(0, modelTopics-1), 1, 3, rapid.ID[int]).Draw(rt, "topics")
	topics := make([]string, len(idx))
	for i, k := range idx {
		topics[i] = m.names[k]
	}
	cursor := broker.Cursor{}
	meaning := map[string]mEntry{}
	if len(m.held) > 0 && rapid.Bool().Draw(rt, "held cursor") {
		// The cursor of an earlier subscription, as it is (it may cover
		// other topics: those in both resume, the others start live).
		h := m.held[rapid.IntRange(0, len(m.held)-1).Draw(rt, "held")]
		for t, e := range h {
			cursor[t], meaning[t] = e.id, e
		}
	} else {
		for _, t := range topics {
			switch rapid.IntRange(0, cChoices-1).Draw(rt, "cursor of "+t[len(t)-1:]) {
			case cMissing:
			case cEmpty:
				cursor[t], meaning[t] = "", mEntry{}
			case cOwn, cForeign:
				var cands []mEntry
				own := rapid.Bool().Draw(rt, "own topic")
				for _, e := range m.pool {
					if (e.pos.topic == t) == own {
						cands = append(cands, e)
					}
				}
				if len(cands) == 0 {
					continue
				}
				e := cands[rapid.IntRange(0, len(cands)-1).Draw(rt, "position")]
				cursor[t], meaning[t] = e.id, e
			case cGarbage:
				e := garbage[rapid.IntRange(0, len(garbage)-1).Draw(rt, "garbage")]
				cursor[t], meaning[t] = e.id, e
			}
		}
	}
	i, b := m.instance(rt)
	s := &mSub{n: m.nsub, topics: topics, want: map[string]*mWant{}}
	m.nsub++
	for _, t := range topics {
		s.want[t] = m.expect(t, meaning[t], cursor[t] != "")
	}
	// Not bounded by a timeout: the subscription lives until it is closed.
	sub, err := b.Subscribe(context.Background(), topics, cursor)
	if err != nil {
		rt.Fatalf("Subscribe(%q, %v) on instance %d: %v", topics, cursor, i, err)
	}
	rt.Cleanup(func() { sub.Close() })
	s.r = NewReader(sub)
	m.subs = append(m.subs, s)
	var desc []string
	for _, t := range topics {
		w := s.want[t]
		e := meaning[t]
		what := "live"
		if cursor[t] != "" {
			what = fmt.Sprintf("%q", e.id)
			if e.pos != nil {
				what += " (" + e.pos.String() + ")"
			}
		}
		desc = append(desc, fmt.Sprintf("%s from %s: reset %q, else after #%d", short(t), what, w.reasons, w.from))
	}
	rt.Logf("sub %d on instance %d: %s", s.n, i, strings.Join(desc, "; "))
}

// expect returns what topic t must deliver for the cursor entry e (set
// tells whether the cursor holds a non-empty position for t).
func (m *model) expect(t string, e mEntry, set bool) *mWant {
	tp := m.topic(t)
	w := &mWant{headAt: tp.head(), loAt: tp.lo, start: -1}
	approxLo := tp.lo
	if m.f.ApproxTrim {
		approxLo = max(tp.lo, tp.head()-m.o.HistorySize) // surely retained after this
	}
	switch {
	case !set:
		w.from = tp.head()
	case e.pos == nil && e.lookalike:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}
	case e.pos == nil:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown}
	case e.pos.topic != t:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}
	case e.pos.inc != m.inc:
		w.reasons = []broker.ResetReason{broker.ReasonEpoch}
	case e.pos.seq < tp.lo:
		w.reasons = []broker.ResetReason{broker.ReasonTruncated}
	case e.pos.seq < approxLo, e.pos.seq > 0 && e.pos.seq == tp.lo:
		// Either side of an approximate trim; or the cursor's own event
		// was the last one trimmed: nothing after it is lost, but a
		// broker may not be able to tell (Redis streams do not say what
		// preceded their first entry).
		w.maybeTruncated, w.from = true, e.pos.seq
	default:
		w.from = e.pos.seq
	}
	return w
}

func (m *model) topic(name string) *mTopic {
	return m.topics[slices.Index(m.names, name)]
}

// close closes one subscription and keeps its cursor.
func (m *model) close(rt *rapid.T) {
	if len(m.subs) == 0 {
		rt.Skip("no subscription")
	}
	k := rapid.IntRange(0, len(m.subs)-1).Draw(rt, "subscription")
	s := m.subs[k]
	m.subs = slices.Delete(m.subs, k, k+1)
	m.retire(rt, s)
	rt.Logf("closed sub %d", s.n)
}

// retire checks s a last time, closes it and keeps its cursor.
func (m *model) retire(rt *rapid.T, s *mSub) {
	m.await(rt, s)
	s.r.Sub.Close()
	h := map[string]mEntry{}
	for _, t := range s.topics {
		seq, err := ParseSequence(t, s.r.Items[t])
		if err != nil {
			rt.Fatalf("sub %d: %v", s.n, err)
		}
		w := s.want[t]
		p := mPos{t, m.inc, w.start + len(seq.Events)}
		h[t] = mEntry{id: seq.Last(), pos: &p}
	}
	m.held = append(m.held, h)
}

func (m *model) restartAction(rt *rapid.T) {
	for _, s := range m.subs {
		m.retire(rt, s)
	}
	m.subs = nil
	for _, b := range m.instances {
		b.Close()
	}
	m.inc++
	for _, tp := range m.topics {
		tp.log, tp.lo = nil, 0
	}
	clear(m.published)
	m.instances = m.instances[:0]
	m.instances = append(m.instances, m.restart(m.tb, m.options()))
	for len(m.instances) < m.o.Replicas {
		m.instances = append(m.instances, m.f.New(m.tb, m.options()))
	}
	rt.Logf("restarted: incarnation %d", m.inc)
}

// check waits until every open subscription has everything the model
// expects of it, and checks it.
func (m *model) check(rt *rapid.T) {
	for _, s := range m.subs {
		m.await(rt, s)
	}
}

func (m *model) finish() {
	for _, s := range m.subs {
		m.await(m.rt, s)
	}
}

// await takes items of s until every topic has its whole expected sequence
// or a difference shows, and fails on a difference.
func (m *model) await(rt *rapid.T, s *mSub) {
	var failure error
	done := s.r.Until(m.f.Timeout, func(r *Reader) bool {
		complete := true
		for _, t := range s.topics {
			ok, err := m.verify(t, r.Items[t], s.want[t])
			if err != nil {
				failure = err
				return true
			}
			complete = complete && ok
		}
		return complete
	})
	switch {
	case failure != nil:
		m.fail(rt, fmt.Sprintf("sub %d", s.n), failure)
	case !done:
		var b strings.Builder
		for _, t := range s.topics {
			w := s.want[t]
			fmt.Fprintf(&b, "\n  topic %s: head %d, want start %d (reset %q), got %s", short(t), m.topic(t).head(), w.start, w.reasons, describe(s.r.Items[t]))
		}
		m.fail(rt, fmt.Sprintf("sub %d", s.n), violationf("a subscription is missing events", "not complete within %v (ended %v, err %v):%s", m.f.Timeout, s.r.Ended, s.r.Err, b.String()))
	}
}

// verify checks the items of one topic taken so far against w. It reports
// whether they are the whole expected sequence, or an error at the first
// difference.
func (m *model) verify(topic string, items []*broker.Event, w *mWant) (bool, error) {
	if len(items) == 0 || len(items) == 1 && items[0].Kind == broker.KindReset {
		return false, nil // nothing to tell yet
	}
	seq, err := ParseSequence(topic, items)
	if err != nil {
		return false, violationf("a malformed sequence", "%v; got %s", err, describe(items))
	}
	tp := m.topic(topic)
	if w.start < 0 {
		switch {
		case seq.Reset == nil && w.reasons != nil:
			return false, violationf("a reset is missing", "topic %s: no reset, want one with reason in %q; got %s", short(topic), w.reasons, describe(items))
		case seq.Reset == nil:
			w.start = w.from
		case w.maybeTruncated && seq.Reset.Reason != broker.ReasonTruncated,
			!w.maybeTruncated && !slices.Contains(w.reasons, seq.Reset.Reason):
			want := w.reasons
			if w.maybeTruncated {
				want = []broker.ResetReason{broker.ReasonTruncated}
			}
			return false, violationf("a reset with the wrong reason (or none wanted)", "topic %s: reset %q, want %s; got %s", short(topic), seq.Reset.Reason, reasonWant(want), describe(items))
		case len(seq.Events) == 0 && w.headAt > 0:
			return false, nil // the retained history tells where it starts
		case len(seq.Events) == 0:
			w.start = 0
		default:
			first, ok := m.published[[2]string{topic, seq.Events[0].ID}]
			if !ok {
				return false, violationf("an event that was never published", "topic %s: after a reset, event %q was never published in this incarnation; got %s", short(topic), seq.Events[0].ID, describe(items))
			}
			w.start = first - 1
			lo := w.loAt
			if m.f.ApproxTrim {
				// Anything from the highest start seen to the last
				// HistorySize events; after a truncated reset, past the
				// cursor.
				hi := max(0, w.headAt-m.o.HistorySize)
				lo = min(max(tp.lo, w.loAt), hi)
				if seq.Reset.Reason == broker.ReasonTruncated && w.maybeTruncated {
					lo = max(lo, w.from)
				}
				if w.start < lo || w.start > hi {
					return false, violationf("the history after a reset starts at the wrong place", "topic %s: reset %q then history from #%d, want it from #%d..#%d; got %s", short(topic), seq.Reset.Reason, first, lo+1, hi+1, describe(items))
				}
				tp.lo = max(tp.lo, w.start)
			} else if w.start != lo {
				return false, violationf("the history after a reset starts at the wrong place", "topic %s: reset %q then history from #%d, want the retained history from #%d; got %s", short(topic), seq.Reset.Reason, first, lo+1, describe(items))
			}
		}
		if err := m.position(topic, seq.Position.ID, w.start); err != nil {
			return false, err
		}
	}
	want := tp.log[w.start:]
	for i, e := range seq.Events {
		if i >= len(want) {
			return false, violationf("more events than the log", "topic %s: %d events after #%d, the log has %d: extra %q; got %s", short(topic), len(seq.Events), w.start, len(want), e.ID, describe(items))
		}
		if e.ID != want[i].id {
			return false, violationf("events differ from the log", "topic %s: event %d after #%d is %q, want %q (#%d); got %s", short(topic), i+1, w.start, e.ID, want[i].id, w.start+i+1, describe(items))
		}
		if e.Type != want[i].msg.Type || e.Data != want[i].msg.Data {
			return false, violationf("an event's type or data differ", "topic %s: event %q is {%q, %q}, published {%q, %q}", short(topic), e.ID, e.Type, e.Data, want[i].msg.Type, want[i].msg.Data)
		}
	}
	return len(seq.Events) == len(want), nil
}

// position checks and records that id, a KindPosition of topic, means seq.
func (m *model) position(topic, id string, seq int) error {
	p := mPos{topic, m.inc, seq}
	key := [2]string{topic, id}
	if q, ok := m.ids[key]; ok && q != p {
		return violationf("one ID stands for two positions", "topic %s: position %q means %v, and was reported before for %v", short(topic), id, p, q)
	}
	if _, ok := m.ids[key]; !ok {
		m.ids[key] = p
		m.pool = append(m.pool, mEntry{id: id, pos: &p})
	}
	return nil
}

// violation is a difference between the broker and the model. rapid keeps
// a smaller failing case only if it fails with the same message, so the
// check fails with the class alone (stable while rapid shrinks) and logs the
// details.
type violation struct{ class, detail string }

func (v *violation) Error() string { return v.class + ": " + v.detail }

func violationf(class, format string, args ...any) error {
	return &violation{class: class, detail: fmt.Sprintf(format, args...)}
}

// fail logs err in full and fails the check with its class. The first
// failure of a RunModel is also logged on the test itself: when rapid
// cannot replay it (a timing-dependent bug), that is the only trace.
func (m *model) fail(rt *rapid.T, prefix string, err error) {
	if !*m.reported {
		*m.reported = true
		m.t.Logf("first failure (the case rapid shrinks follows): %s: %v", prefix, err)
	}
	if v, ok := err.(*violation); ok {
		rt.Logf("%s: %s", prefix, v.detail)
		rt.Fatal(v.class)
	}
	rt.Fatalf("%s: %v", prefix, err)
}

func reasonWant(r []broker.ResetReason) string {
	if len(r) == 0 {
		return "none"
	}
	return fmt.Sprintf("one of %q", r)
}

// describe renders items compactly for failure messages.
func describe(items []*broker.Event) string {
	var parts []string
	for _, e := range items {
		switch e.Kind {
		case broker.KindReset:
			parts = append(parts, "reset("+string(e.Reason)+")")
		case broker.KindPosition:
			parts = append(parts, "pos("+e.ID+")")
		default:
			parts = append(parts, e.ID)
		}
	}
	if len(parts) > 12 {
		parts = append(parts[:4], append([]string{"..."}, parts[len(parts)-6:]...)...)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// rapidTB hands Factory functions a testing.TB scoped to one rapid check:
// cleanups run at the end of the check, failures fail the check.
type rapidTB struct {
	testing.TB
	rt *rapid.T
}

func (r rapidTB) Cleanup(f func())                  { r.rt.Cleanup(f) }
func (r rapidTB) Context() context.Context          { return r.rt.Context() }
func (r rapidTB) Error(args ...any)                 { r.rt.Error(args...) }
func (r rapidTB) Errorf(format string, args ...any) { r.rt.Errorf(format, args...) }
func (r rapidTB) Fatal(args ...any)                 { r.rt.Fatal(args...) }
func (r rapidTB) Fatalf(format string, args ...any) { r.rt.Fatalf(format, args...) }
func (r rapidTB) Fail()                             { r.rt.Fail() }
func (r rapidTB) FailNow()                          { r.rt.FailNow() }
func (r rapidTB) Failed() bool                      { return r.rt.Failed() }
func (r rapidTB) Log(args ...any)                   { r.rt.Log(args...) }
func (r rapidTB) Logf(format string, args ...any)   { r.rt.Logf(format, args...) }
func (r rapidTB) Skip(args ...any)                  { r.rt.Skip(args...) }
func (r rapidTB) Skipf(format string, args ...any)  { r.rt.Skipf(format, args...) }
func (r rapidTB) SkipNow()                          { r.rt.SkipNow() }
