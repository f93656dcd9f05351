package brokertest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"go.uber.org/goleak"
)

type suite struct{ f Factory }

// topicName returns a fresh topic name, unique across runs sharing storage.
func topicName(tag string) string {
	return fmt.Sprintf("bt-%016x-%s", rand.Uint64(), tag)
}

// rec is what the suite knows about one published event.
type rec struct {
	msg           broker.Message
	before, after time.Time
}

// plog records published events to check payloads and times of deliveries.
type plog struct {
	mu   sync.Mutex
	recs map[[2]string]rec // {topic, id}
}

func newLog() *plog { return &plog{recs: map[[2]string]rec{}} }

// publish publishes msg and records it. From the test goroutine only
// (it calls t.Fatalf).
func (s *suite) publish(t testing.TB, l *plog, b broker.Broker, topic string, msg broker.Message) string {
	t.Helper()
	id, err := s.tryPublish(t, l, b, topic, msg)
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return id
}

// tryPublish publishes msg within the suite's timeout, checks the ID's
// format and records it. Safe for concurrent use.
func (s *suite) tryPublish(t testing.TB, l *plog, b broker.Broker, topic string, msg broker.Message) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.f.Timeout)
	defer cancel()
	before := time.Now()
	id, err := b.Publish(ctx, topic, msg)
	after := time.Now()
	if err != nil {
		return "", err
	}
	if !ValidID(id) {
		return id, fmt.Errorf("Publish(%q) returned ID %q: want 1-%d bytes of [0-9A-Za-z_-]", topic, id, MaxIDLen)
	}
	if l != nil {
		l.mu.Lock()
		l.recs[[2]string{topic, id}] = rec{msg: msg, before: before, after: after}
		l.mu.Unlock()
	}
	return id, nil
}

// publishN publishes n messages sequentially and returns their IDs.
func (s *suite) publishN(t testing.TB, l *plog, b broker.Broker, topic string, n int, tag string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = s.publish(t, l, b, topic, broker.Message{Type: "t-" + tag, Data: fmt.Sprintf("%s %d", tag, i)})
	}
	return ids
}

// check compares the payload, topic and time of every event of seq with
// what was published.
func (l *plog) check(t testing.TB, seq Sequence) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	bad := 0
	for _, e := range seq.Events {
		r, ok := l.recs[[2]string{seq.Topic, e.ID}]
		switch {
		case !ok:
			t.Errorf("topic %q: event %q was never returned by Publish", seq.Topic, e.ID)
		case e.Type != r.msg.Type || e.Data != r.msg.Data:
			t.Errorf("topic %q: event %q is {Type %q, Data %.60q}, published {Type %q, Data %.60q}",
				seq.Topic, e.ID, e.Type, e.Data, r.msg.Type, r.msg.Data)
		case e.Time.IsZero():
			t.Errorf("topic %q: event %q has a zero Time", seq.Topic, e.ID)
		case e.Time.Before(r.before.Add(-5*time.Second)) || e.Time.After(r.after.Add(5*time.Second)):
			t.Errorf("topic %q: event %q has Time %v, published between %v and %v", seq.Topic, e.ID, e.Time, r.before, r.after)
		default:
			continue
		}
		if bad++; bad >= 5 {
			return
		}
	}
}

// subscribe subscribes with the test's context and returns a Reader.
func (s *suite) subscribe(t testing.TB, b broker.Broker, topics []string, from broker.Cursor) *Reader {
	t.Helper()
	return s.subscribeCtx(t, t.Context(), b, topics, from)
}

func (s *suite) subscribeCtx(t testing.TB, ctx context.Context, b broker.Broker, topics []string, from broker.Cursor) *Reader {
	t.Helper()
	sub, err := b.Subscribe(ctx, topics, from)
	if err != nil {
		t.Fatalf("Subscribe(%q, %v): %v", topics, from, err)
	}
	t.Cleanup(func() { sub.Close() })
	return NewReader(sub)
}

// until waits for cond on r and fails the test if it does not hold in time.
func (s *suite) until(t testing.TB, r *Reader, what string, cond func(*Reader) bool) {
	t.Helper()
	if !r.Until(s.f.Timeout, cond) {
		t.Fatalf("waiting for %s: got %s", what, r)
	}
}

// waitEvents waits until topic has at least n events.
func (s *suite) waitEvents(t testing.TB, r *Reader, topic string, n int) {
	t.Helper()
	s.until(t, r, fmt.Sprintf("%d events of %q", n, topic), func(r *Reader) bool { return r.Count(topic) >= n })
}

// waitPosition waits until topic's position arrived and returns it.
func (s *suite) waitPosition(t testing.TB, r *Reader, topic string) string {
	t.Helper()
	s.until(t, r, fmt.Sprintf("the position of %q", topic), func(r *Reader) bool { return r.HasPosition(topic) })
	for _, e := range r.Items[topic] {
		if e.Kind == broker.KindPosition {
			return e.ID
		}
	}
	return ""
}

// waitLast waits until the last item of topic has ID id.
func (s *suite) waitLast(t testing.TB, r *Reader, topic, id string) {
	t.Helper()
	s.until(t, r, fmt.Sprintf("%q in %q", id, topic), func(r *Reader) bool { return r.LastID(topic) == id })
}

// verifyNoLeaks fails t if goroutines other than those ignored by opts
// still run once the suite's timeout has passed.
func (s *suite) verifyNoLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	opts = append(opts, s.f.IgnoreGoroutines...)
	deadline := time.Now().Add(s.f.Timeout)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines leaked: %v", err)
			return
		}
	}
}

// checkOrder checks that got holds every ID of every publisher exactly once
// and each publisher's IDs in the order Publish returned them.
func checkOrder(t testing.TB, topic string, got []string, per [][]string) bool {
	t.Helper()
	index := make(map[string]int, len(got))
	for i, id := range got {
		index[id] = i
	}
	total := 0
	for p, ids := range per {
		total += len(ids)
		last := -1
		for _, id := range ids {
			i, ok := index[id]
			if !ok {
				t.Errorf("topic %q: publisher %d's event %q is missing", topic, p, id)
				return false
			}
			if i <= last {
				t.Errorf("topic %q: publisher %d's event %q arrived out of its publish order", topic, p, id)
				return false
			}
			last = i
		}
	}
	if len(got) != total {
		t.Errorf("topic %q: %d events delivered, %d published", topic, len(got), total)
		return false
	}
	return true
}

func (s *suite) testPublishIDs(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	topic := topicName("ids")
	r := s.subscribe(t, b, []string{topic}, nil)
	pos := s.waitPosition(t, r, topic)
	ids := s.publishN(t, l, b, topic, 50, "ids")
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("Publish returned %q twice", id)
		}
		seen[id] = true
	}
	s.waitEvents(t, r, topic, len(ids))
	seq, _ := CheckSequence(t, topic, r.Items[topic], Want{Position: pos, IDs: ids})
	l.check(t, seq)

	// The position of a topic that had no event yet is a resumable cursor.
	r2 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: pos})
	s.waitEvents(t, r2, topic, len(ids))
	CheckSequence(t, topic, r2.Items[topic], Want{Position: pos, IDs: ids})
}

func (s *suite) testOrderPerTopic(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	topics := []string{topicName("a"), topicName("b"), topicName("c")}
	r := s.subscribe(t, b, topics, nil)
	ids := make([][]string, len(topics))
	for i := range 30 {
		for k, topic := range topics {
			ids[k] = append(ids[k], s.publish(t, l, b, topic, broker.Message{Data: fmt.Sprint(i)}))
		}
	}
	s.until(t, r, "all events", func(r *Reader) bool { return r.Total() >= 90 })
	for k, topic := range topics {
		seq, _ := CheckSequence(t, topic, r.Items[topic], Want{IDs: ids[k]})
		l.check(t, seq)
	}
	if len(r.Items) != len(topics) {
		t.Errorf("items of %d topics delivered, subscribed to %d", len(r.Items), len(topics))
	}
}

func (s *suite) testLiveOnly(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	topic, fresh := topicName("live"), topicName("fresh")
	pre := s.publishN(t, l, b, topic, 5, "pre")
	rNil := s.subscribe(t, b, []string{topic, fresh}, nil)
	rEmpty := s.subscribe(t, b, []string{topic, fresh}, broker.Cursor{topic: "", fresh: ""})
	post := s.publishN(t, l, b, topic, 5, "post")
	postFresh := s.publishN(t, l, b, fresh, 3, "fresh")
	for name, r := range map[string]*Reader{"nil cursor": rNil, "empty positions": rEmpty} {
		t.Run(name, func(t *testing.T) {
			s.until(t, r, "all events", func(r *Reader) bool { return r.Total() >= 8 })
			// The live position is the head: the last event published before.
			seq, _ := CheckSequence(t, topic, r.Items[topic], Want{Position: pre[len(pre)-1], IDs: post})
			l.check(t, seq)
			CheckSequence(t, fresh, r.Items[fresh], Want{IDs: postFresh})
		})
	}
}

func (s *suite) testReplayAfterCursor(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	topic := topicName("replay")
	ids := s.publishN(t, l, b, topic, 10, "old")
	rMid := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[4]})
	rFirst := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	rHead := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[9]})
	s.waitEvents(t, rMid, topic, 5) // the replay arrives before any live event
	ids = append(ids, s.publishN(t, l, b, topic, 5, "new")...)
	for _, c := range []struct {
		r    *Reader
		from int
	}{{rMid, 4}, {rFirst, 0}, {rHead, 9}} {
		s.waitLast(t, c.r, topic, ids[len(ids)-1])
		seq, _ := CheckSequence(t, topic, c.r.Items[topic], Want{Position: ids[c.from], IDs: ids[c.from+1:]})
		l.check(t, seq)
	}
}

// testReplayLiveSwitch subscribes with cursors while four publishers run,
// so that the switch from replay to live races with publishes.
func (s *suite) testReplayLiveSwitch(t *testing.T) {
	const publishers, minEach, maxEach, lates = 4, 25, 2000, 12
	b := s.f.New(t, Options{HistorySize: 4*publishers*maxEach + 100, QueueLimit: 2*publishers*maxEach + 100})
	topic := topicName("switch")
	ref := s.subscribe(t, b, []string{topic}, nil)
	refPos := s.waitPosition(t, ref, topic)

	var (
		mu    sync.Mutex
		sofar []string
	)
	per := make([][]string, publishers)
	var stop atomic.Bool
	progress := make(chan struct{}, 1)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := 0; i < maxEach && (i < minEach || !stop.Load()); i++ {
				id, err := s.tryPublish(t, nil, b, topic, broker.Message{Data: fmt.Sprintf("p%d-%d", p, i)})
				if err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
				per[p] = append(per[p], id)
				mu.Lock()
				sofar = append(sofar, id)
				mu.Unlock()
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		})
	}

	type late struct {
		r      *Reader
		cursor string
	}
	var ls []late
	deadline := time.After(s.f.Timeout)
	for k := range lates {
		// Wait for a few more publishes, unless the publishers are done.
		mu.Lock()
		want := len(sofar) + 5
		mu.Unlock()
		for waiting := true; waiting; {
			mu.Lock()
			waiting = len(sofar) < want && len(sofar) < publishers*maxEach
			mu.Unlock()
			if !waiting {
				break
			}
			select {
			case <-progress:
			case <-deadline:
				t.Fatal("publishers make no progress")
			case <-time.After(time.Second): // the publishers may have stopped
				waiting = false
			}
		}
		mu.Lock()
		var cursor string
		switch k % 3 {
		case 0:
			cursor = sofar[len(sofar)-1] // the freshest: replay races with live
		case 1:
			cursor = sofar[len(sofar)/2]
		case 2: // live
		}
		mu.Unlock()
		ls = append(ls, late{s.subscribe(t, b, []string{topic}, broker.Cursor{topic: cursor}), cursor})
	}
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}

	total := 0
	for _, ids := range per {
		total += len(ids)
	}
	s.waitEvents(t, ref, topic, total)
	refSeq, err := ParseSequence(topic, ref.Items[topic])
	if err != nil {
		t.Fatal(err)
	}
	if refSeq.Reset != nil || refSeq.Position.ID != refPos {
		t.Fatalf("reference subscriber: reset %v, position %q, want none and %q", refSeq.Reset, refSeq.Position.ID, refPos)
	}
	order := refSeq.IDs()
	if !checkOrder(t, topic, order, per) {
		return
	}
	index := map[string]int{refPos: -1}
	for i, id := range order {
		index[id] = i
	}
	for k, lt := range ls {
		s.waitLast(t, lt.r, topic, order[len(order)-1])
		seq, err := ParseSequence(topic, lt.r.Items[topic])
		if err != nil {
			t.Errorf("late subscriber %d (cursor %q): %v", k, lt.cursor, err)
			continue
		}
		i, ok := index[seq.Position.ID]
		if !ok {
			t.Errorf("late subscriber %d (cursor %q): position %q is not in the log", k, lt.cursor, seq.Position.ID)
			continue
		}
		if !CheckSequenceOK(t, topic, lt.r.Items[topic], Want{Position: lt.cursor, IDs: order[i+1:]}) {
			t.Errorf("late subscriber %d (cursor %q) differs from the log", k, lt.cursor)
		}
	}
}

func (s *suite) testMultiTopic(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	ta, tb, tc, td := topicName("a"), topicName("b"), topicName("c"), topicName("d")
	a := s.publishN(t, l, b, ta, 5, "a")
	bs := s.publishN(t, l, b, tb, 5, "b")
	c := s.publishN(t, l, b, tc, 5, "c")
	// a resumes mid-way, b starts live (""), c is missing (live), d is a
	// topic never published to with an unknown cursor.
	r := s.subscribe(t, b, []string{ta, tb, tc, td}, broker.Cursor{ta: a[1], tb: "", td: "?"})
	s.waitEvents(t, r, ta, 3)
	a = append(a, s.publishN(t, l, b, ta, 3, "a2")...)
	b2 := s.publishN(t, l, b, tb, 3, "b2")
	c2 := s.publishN(t, l, b, tc, 3, "c2")
	d := s.publishN(t, l, b, td, 3, "d")
	s.until(t, r, "all events", func(r *Reader) bool { return r.Total() >= 6+3+3+3 })
	for _, w := range []struct {
		topic string
		want  Want
	}{
		{ta, Want{Position: a[1], IDs: a[2:]}},
		{tb, Want{Position: bs[4], IDs: b2}},
		{tc, Want{Position: c[4], IDs: c2}},
		{td, Want{Reset: []string{broker.ReasonUnknown}, IDs: d}},
	} {
		seq, _ := CheckSequence(t, w.topic, r.Items[w.topic], w.want)
		l.check(t, seq)
	}
}

func (s *suite) testPayloads(t *testing.T) {
	b := s.f.New(t, Options{})
	l := newLog()
	topic := topicName("payload")
	msgs := []broker.Message{
		{},
		{Data: "line1\nline2\r\nline3\rend\n"},
		{Type: "custom.type", Data: "héllo wörld 🌍 \u2028 \ttab"},
		{Type: "x", Data: " leading space"},
		{Type: "big", Data: strings.Repeat("0123456789abcdef", 4096)},
		{Type: strings.Repeat("T", broker.MaxTypeLen), Data: "{\"json\": [1, 2]}"},
		{Data: "\n"},
	}
	r := s.subscribe(t, b, []string{topic}, nil)
	pos := s.waitPosition(t, r, topic)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, s.publish(t, l, b, topic, m))
	}
	s.waitEvents(t, r, topic, len(ids))
	seq, _ := CheckSequence(t, topic, r.Items[topic], Want{Position: pos, IDs: ids})
	l.check(t, seq)
	// The same payloads come back from the history.
	r2 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: pos})
	s.waitEvents(t, r2, topic, len(ids))
	seq, _ = CheckSequence(t, topic, r2.Items[topic], Want{Position: pos, IDs: ids})
	l.check(t, seq)
}

// testSharedEvents checks that live subscribers of one instance receive the
// same *Event (one per published event per replica).
func (s *suite) testSharedEvents(t *testing.T) {
	b := s.f.New(t, Options{})
	topic := topicName("shared")
	r1 := s.subscribe(t, b, []string{topic}, nil)
	r2 := s.subscribe(t, b, []string{topic}, nil)
	s.waitPosition(t, r1, topic)
	s.waitPosition(t, r2, topic)
	ids := s.publishN(t, nil, b, topic, 3, "shared")
	s.waitEvents(t, r1, topic, 3)
	s.waitEvents(t, r2, topic, 3)
	s1, ok1 := CheckSequence(t, topic, r1.Items[topic], Want{IDs: ids})
	s2, ok2 := CheckSequence(t, topic, r2.Items[topic], Want{IDs: ids})
	if !ok1 || !ok2 {
		return
	}
	for i := range s1.Events {
		if s1.Events[i] != s2.Events[i] {
			t.Errorf("event %q: subscribers got different *Event values; want one shared *Event per event per instance", ids[i])
		}
	}
}

func (s *suite) testTruncated(t *testing.T) {
	const size, n = 10, 300
	b := s.f.New(t, Options{HistorySize: size})
	l := newLog()
	topic := topicName("trunc")
	ids := s.publishN(t, l, b, topic, n, "trunc")
	r0 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	s.waitLast(t, r0, topic, ids[n-1])
	seq, ok := CheckSequence(t, topic, r0.Items[topic], Want{Reset: []string{broker.ReasonTruncated}, IDs: ids, SuffixMin: size})
	if !ok {
		return
	}
	l.check(t, seq)
	kept := len(seq.Events)
	if !s.f.ApproxTrim && kept != size {
		t.Errorf("history holds %d events, want exactly HistorySize %d", kept, size)
	}
	if kept >= n-1 {
		t.Fatalf("history holds %d events: nothing was trimmed", kept)
	}
	// The position after a reset is a cursor a consumer can resume from
	// without another reset.
	rPos := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: seq.Position.ID})
	rLast := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[n-2]})
	rHead := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[n-1]})
	s.waitPosition(t, rHead, topic)
	ids = append(ids, s.publish(t, l, b, topic, broker.Message{Data: "live"}))
	for _, c := range []struct {
		name string
		r    *Reader
		want Want
	}{
		{"resumed from the first ID", r0, Want{Reset: []string{broker.ReasonTruncated}, IDs: ids[len(ids)-kept-1:]}},
		{"resumed from the reset's position", rPos, Want{Position: seq.Position.ID, IDs: ids[len(ids)-kept-1:]}},
		{"resumed from the last but one", rLast, Want{Position: ids[n-2], IDs: ids[n-1:]}},
		{"resumed from the head", rHead, Want{Position: ids[n-1], IDs: ids[n:]}},
	} {
		s.waitLast(t, c.r, topic, ids[n])
		if !CheckSequenceOK(t, topic, c.r.Items[topic], c.want) {
			t.Errorf("subscriber %s differs", c.name)
		}
	}
}

func (s *suite) testUnknownCursor(t *testing.T) {
	b := s.f.New(t, Options{HistorySize: 1000})
	l := newLog()
	topic, long, empty := topicName("short"), topicName("long"), topicName("empty")
	ids := s.publishN(t, l, b, topic, 5, "short")
	longIDs := s.publishN(t, l, b, long, 20, "long")
	cases := []struct {
		name, cursor string
		reasons      []string
	}{
		{"question mark", "?", []string{broker.ReasonUnknown}},
		{"garbage", "garbage-but-printable", []string{broker.ReasonUnknown}},
		{"long number", strings.Repeat("9", 300), []string{broker.ReasonUnknown}},
		{"control characters", "\x00\r\n\x7f", []string{broker.ReasonUnknown}},
		// Ahead of this topic's head (or of another epoch, for brokers with
		// an epoch per topic).
		{"other topic's cursor", longIDs[19], []string{broker.ReasonUnknown, broker.ReasonEpoch}},
	}
	readers := make([]*Reader, len(cases))
	for i, c := range cases {
		readers[i] = s.subscribe(t, b, []string{topic, empty}, broker.Cursor{topic: c.cursor, empty: c.cursor})
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := readers[i]
			s.until(t, r, "the history", func(r *Reader) bool { return r.Count(topic) >= len(ids) && r.HasPosition(empty) })
			seq, ok := CheckSequence(t, topic, r.Items[topic], Want{Reset: c.reasons, IDs: ids})
			l.check(t, seq)
			eseq, eok := CheckSequence(t, empty, r.Items[empty], Want{Reset: c.reasons})
			if !ok || !eok {
				return
			}
			// The positions after the reset are resumable without a reset.
			r2 := s.subscribe(t, b, []string{topic, empty}, broker.Cursor{topic: seq.Position.ID, empty: eseq.Position.ID})
			s.until(t, r2, "the history", func(r *Reader) bool { return r.Count(topic) >= len(ids) && r.HasPosition(empty) })
			CheckSequence(t, topic, r2.Items[topic], Want{Position: seq.Position.ID, IDs: ids})
			CheckSequence(t, empty, r2.Items[empty], Want{Position: eseq.Position.ID})
		})
	}
	// Live events follow the reset's history.
	live := s.publish(t, l, b, topic, broker.Message{Data: "live"})
	liveEmpty := s.publish(t, l, b, empty, broker.Message{Data: "live"})
	for i, c := range cases {
		r := readers[i]
		s.until(t, r, "live events", func(r *Reader) bool { return r.LastID(topic) == live && r.LastID(empty) == liveEmpty })
		CheckSequence(t, topic, r.Items[topic], Want{Reset: c.reasons, IDs: append(slices.Clip(ids), live)})
		CheckSequence(t, empty, r.Items[empty], Want{Reset: c.reasons, IDs: []string{liveEmpty}})
	}
}

func (s *suite) testEpoch(t *testing.T) {
	if s.f.SharedStorage {
		t.Skip("instances share storage: no other epoch to test")
	}
	a, b := s.f.New(t, Options{}), s.f.New(t, Options{})
	l := newLog()
	topic, onlyA := topicName("epoch"), topicName("only-a")
	aIDs := s.publishN(t, l, a, topic, 3, "a")
	bIDs := s.publishN(t, l, b, topic, 5, "b")
	aOnly := s.publishN(t, l, a, onlyA, 2, "a")
	r := s.subscribe(t, b, []string{topic, onlyA}, broker.Cursor{topic: aIDs[1], onlyA: aOnly[1]})
	s.until(t, r, "b's history", func(r *Reader) bool { return r.Count(topic) >= len(bIDs) && r.HasPosition(onlyA) })
	seq, ok := CheckSequence(t, topic, r.Items[topic], Want{Reset: []string{broker.ReasonEpoch}, IDs: bIDs})
	l.check(t, seq)
	CheckSequence(t, onlyA, r.Items[onlyA], Want{Reset: []string{broker.ReasonEpoch}})
	if !ok {
		return
	}
	r2 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: seq.Position.ID})
	s.waitEvents(t, r2, topic, len(bIDs))
	CheckSequence(t, topic, r2.Items[topic], Want{Position: seq.Position.ID, IDs: bIDs})
	live := s.publish(t, l, b, onlyA, broker.Message{Data: "live"})
	s.waitLast(t, r, onlyA, live)
	CheckSequence(t, onlyA, r.Items[onlyA], Want{Reset: []string{broker.ReasonEpoch}, IDs: []string{live}})
}

func (s *suite) testSharedStorage(t *testing.T) {
	if !s.f.SharedStorage {
		t.Skip("instances do not share storage")
	}
	a, b := s.f.New(t, Options{}), s.f.New(t, Options{})
	l := newLog()

	t.Run("single topic", func(t *testing.T) {
		topic := topicName("shared")
		ra := s.subscribe(t, a, []string{topic}, nil)
		pos := s.waitPosition(t, ra, topic)
		ids := s.publishN(t, l, b, topic, 10, "b")
		s.waitEvents(t, ra, topic, len(ids))
		seq, _ := CheckSequence(t, topic, ra.Items[topic], Want{Position: pos, IDs: ids})
		l.check(t, seq)
		// Resume on b with a cursor delivered by a.
		rb := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: seq.Events[3].ID})
		rb0 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: pos})
		s.waitEvents(t, rb, topic, 6)
		// Publishes alternate between the instances: one log.
		for i := range 6 {
			p := a
			if i%2 == 1 {
				p = b
			}
			ids = append(ids, s.publish(t, l, p, topic, broker.Message{Data: fmt.Sprint("alt", i)}))
		}
		last := ids[len(ids)-1]
		for name, c := range map[string]struct {
			r    *Reader
			want Want
		}{
			"a live":           {ra, Want{Position: pos, IDs: ids}},
			"b from a's event": {rb, Want{Position: ids[3], IDs: ids[4:]}},
			"b from a's start": {rb0, Want{Position: pos, IDs: ids}},
		} {
			s.waitLast(t, c.r, topic, last)
			if seq, ok := CheckSequence(t, topic, c.r.Items[topic], c.want); !ok {
				t.Errorf("subscriber %s differs", name)
			} else {
				l.check(t, seq)
			}
		}
	})

	t.Run("multi topic", func(t *testing.T) {
		t1, t2 := topicName("m1"), topicName("m2")
		ra := s.subscribe(t, a, []string{t1, t2}, nil)
		p1, p2 := s.waitPosition(t, ra, t1), s.waitPosition(t, ra, t2)
		var ids1, ids2 []string
		for i := range 6 {
			ids1 = append(ids1, s.publish(t, l, b, t1, broker.Message{Data: fmt.Sprint(i)}))
			ids2 = append(ids2, s.publish(t, l, b, t2, broker.Message{Data: fmt.Sprint(i)}))
		}
		s.until(t, ra, "12 events", func(r *Reader) bool { return r.Total() >= 12 })
		seq1, ok1 := CheckSequence(t, t1, ra.Items[t1], Want{Position: p1, IDs: ids1})
		CheckSequence(t, t2, ra.Items[t2], Want{Position: p2, IDs: ids2})
		if !ok1 {
			return
		}
		rb := s.subscribe(t, b, []string{t1, t2}, broker.Cursor{t1: seq1.Events[2].ID, t2: p2})
		s.until(t, rb, "9 events", func(r *Reader) bool { return r.Total() >= 9 })
		ids1 = append(ids1, s.publish(t, l, a, t1, broker.Message{Data: "live"}))
		ids2 = append(ids2, s.publish(t, l, a, t2, broker.Message{Data: "live"}))
		s.until(t, rb, "11 events", func(r *Reader) bool { return r.Total() >= 11 })
		CheckSequence(t, t1, rb.Items[t1], Want{Position: ids1[2], IDs: ids1[3:]})
		CheckSequence(t, t2, rb.Items[t2], Want{Position: p2, IDs: ids2})
	})
}

func (s *suite) testSlowConsumer(t *testing.T) {
	const limit, n = 16, 200
	b := s.f.New(t, Options{QueueLimit: limit})
	l := newLog()
	topic := topicName("slow")
	fast := s.subscribe(t, b, []string{topic}, nil)
	slow := s.subscribe(t, b, []string{topic}, nil)
	pos := s.waitPosition(t, fast, topic)
	var ids []string
	for i := range n {
		// tryPublish bounds each publish by the timeout: a publisher
		// blocked by the slow subscriber fails here.
		id, err := s.tryPublish(t, l, b, topic, broker.Message{Data: fmt.Sprint(i)})
		if err != nil {
			t.Fatalf("publish %d with a stalled subscriber: %v", i, err)
		}
		ids = append(ids, id)
		// The fast subscriber keeps up: it takes each event before the next.
		s.waitEvents(t, fast, topic, i+1)
	}
	seq, _ := CheckSequence(t, topic, fast.Items[topic], Want{Position: pos, IDs: ids})
	l.check(t, seq)

	// The slow subscriber (which took nothing so far) gets what was queued,
	// a prefix of the log, then ErrSlowConsumer.
	if !slow.UntilEnd(s.f.Timeout) {
		t.Fatalf("the slow subscriber did not end: %s", slow)
	}
	if !errors.Is(slow.Err, broker.ErrSlowConsumer) {
		t.Errorf("slow subscriber ended with %v, want ErrSlowConsumer", slow.Err)
	}
	got := slow.Count(topic)
	if got > limit {
		t.Errorf("slow subscriber received %d events, more than QueueLimit %d", got, limit)
	}
	CheckSequence(t, topic, slow.Items[topic], Want{Position: pos, IDs: ids[:min(got, len(ids))]})

	// The broker goes on delivering to the others.
	more := s.publishN(t, l, b, topic, 5, "more")
	s.waitLast(t, fast, topic, more[4])
	CheckSequence(t, topic, fast.Items[topic], Want{Position: pos, IDs: append(ids, more...)})
}

func (s *suite) testCloseAndCancel(t *testing.T) {
	b := s.f.New(t, Options{})
	topic := topicName("close")
	ids := s.publishN(t, nil, b, topic, 3, "close")
	from := broker.Cursor{topic: ids[0]}
	want := Want{Position: ids[0], IDs: ids[1:]}

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		r := s.subscribeCtx(t, ctx, b, []string{topic}, from)
		cancel()
		if !r.UntilEnd(s.f.Timeout) {
			t.Fatalf("the subscription did not end after its ctx was cancelled: %s", r)
		}
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("Take returned %v, want context.Canceled", r.Err)
		}
		// Pending items are delivered before the error.
		CheckSequence(t, topic, r.Items[topic], want)
		if _, err := r.Sub.Take(nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Take after the end returned %v, want context.Canceled again", err)
		}
	})

	t.Run("close", func(t *testing.T) {
		r := s.subscribe(t, b, []string{topic}, from)
		if err := r.Sub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if !r.UntilEnd(s.f.Timeout) {
			t.Fatalf("the subscription did not end after Close: %s", r)
		}
		if !errors.Is(r.Err, broker.ErrClosed) {
			t.Errorf("Take returned %v, want ErrClosed", r.Err)
		}
		if err := r.Sub.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := r.Sub.Take(nil); !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Take after the end returned %v, want ErrClosed again", err)
		}
	})

	// Close and cancel wake a consumer blocked on Ready.
	for _, how := range []string{"close while waiting", "cancel while waiting"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r := s.subscribeCtx(t, ctx, b, []string{topic}, nil)
			s.waitPosition(t, r, topic)
			done := make(chan bool)
			go func() { done <- r.UntilEnd(s.f.Timeout) }()
			if how == "close while waiting" {
				r.Sub.Close()
			} else {
				cancel()
			}
			if !<-done {
				t.Fatalf("the waiting consumer was not woken: %s", r)
			}
			wantErr := broker.ErrClosed
			if how != "close while waiting" {
				wantErr = context.Canceled
			}
			if !errors.Is(r.Err, wantErr) {
				t.Errorf("Take returned %v, want %v", r.Err, wantErr)
			}
		})
	}

	t.Run("cancelled before Subscribe", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		sub, err := b.Subscribe(ctx, []string{topic}, nil)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Subscribe with a cancelled ctx: %v, want context.Canceled", err)
			}
			return
		}
		defer sub.Close()
		r := NewReader(sub)
		if !r.UntilEnd(s.f.Timeout) || !errors.Is(r.Err, context.Canceled) {
			t.Errorf("a subscription with a cancelled ctx must end with context.Canceled: %s", r)
		}
	})
}

// testSubscriptionsLeakNothing checks that subscriptions released by Close
// or cancel leave no goroutine behind, and that a subscription does not
// cost a goroutine of its own.
func (s *suite) testSubscriptionsLeakNothing(t *testing.T) {
	const topics, subs = 5, 100
	b := s.f.New(t, Options{})
	// Warm up, so that goroutines a broker starts once are running.
	warm := topicName("warm")
	rw := s.subscribe(t, b, []string{warm}, nil)
	s.waitPosition(t, rw, warm)
	s.publish(t, nil, b, warm, broker.Message{})
	s.waitEvents(t, rw, warm, 1)
	rw.Sub.Close()
	rw.UntilEnd(s.f.Timeout)
	ignore := goleak.IgnoreCurrent()
	before := runtime.NumGoroutine()

	names := make([]string, topics)
	for i := range names {
		names[i] = topicName(fmt.Sprint("leak", i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	readers := make([]*Reader, subs)
	for i := range readers {
		c := t.Context()
		if i%2 == 0 {
			c = ctx
		}
		readers[i] = s.subscribeCtx(t, c, b, []string{names[i%topics]}, nil)
	}
	for i, r := range readers {
		s.waitPosition(t, r, names[i%topics])
	}
	for _, topic := range names {
		s.publish(t, nil, b, topic, broker.Message{})
	}
	for i, r := range readers {
		s.waitEvents(t, r, names[i%topics], 1)
	}
	if grown := runtime.NumGoroutine() - before; grown >= subs {
		t.Errorf("%d live subscriptions on %d topics added %d goroutines: want no goroutine per subscription (use context.AfterFunc)", subs, topics, grown)
	}
	cancel()
	for i, r := range readers {
		if i%2 == 1 {
			r.Sub.Close()
		}
	}
	for i, r := range readers {
		if !r.UntilEnd(s.f.Timeout) {
			t.Fatalf("subscription %d did not end: %s", i, r)
		}
	}
	s.verifyNoLeaks(t, ignore)
}

func (s *suite) testBrokerClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	b := s.f.New(t, Options{})
	topic := topicName("bclose")
	ids := s.publishN(t, nil, b, topic, 3, "bclose")
	rLive := s.subscribe(t, b, []string{topic}, nil)
	rReplay := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	rWait := s.subscribe(t, b, []string{topic}, nil)
	s.waitPosition(t, rWait, topic)
	done := make(chan bool)
	go func() { done <- rWait.UntilEnd(s.f.Timeout) }()

	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !<-done {
		t.Errorf("a consumer waiting on Ready was not woken by Broker.Close: %s", rWait)
	}
	for name, r := range map[string]*Reader{"live": rLive, "replay": rReplay, "waiting": rWait} {
		if !r.UntilEnd(s.f.Timeout) {
			t.Errorf("%s subscription did not end after Broker.Close: %s", name, r)
		} else if !errors.Is(r.Err, broker.ErrClosed) {
			t.Errorf("%s subscription ended with %v, want ErrClosed", name, r.Err)
		}
	}
	CheckSequence(t, topic, rReplay.Items[topic], Want{Position: ids[0], IDs: ids[1:]})

	ctx, cancel := context.WithTimeout(t.Context(), s.f.Timeout)
	defer cancel()
	if _, err := b.Publish(ctx, topic, broker.Message{}); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
	if sub, err := b.Subscribe(ctx, []string{topic}, nil); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
		if sub != nil {
			sub.Close()
		}
	}
	s.verifyNoLeaks(t, ignore)
}

func (s *suite) testInvalid(t *testing.T) {
	b := s.f.New(t, Options{})
	ctx := t.Context()
	good := topicName("valid")
	for _, topic := range []string{"", "has space", "tab\t", "nl\n", "é", strings.Repeat("x", broker.MaxTopicLen+1)} {
		if _, err := b.Publish(ctx, topic, broker.Message{}); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Publish to topic %q: %v, want ErrInvalidTopic", topic, err)
		}
		if sub, err := b.Subscribe(ctx, []string{good, topic}, nil); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Subscribe to topic %q: %v, want ErrInvalidTopic", topic, err)
			if sub != nil {
				sub.Close()
			}
		}
	}
	for _, topics := range [][]string{nil, {}, {good, good}} {
		if sub, err := b.Subscribe(ctx, topics, nil); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Subscribe(%q): %v, want ErrInvalidTopic", topics, err)
			if sub != nil {
				sub.Close()
			}
		}
	}
	for _, typ := range []string{"herald.reset", "a\nb", "a\rb", "a\x00b", strings.Repeat("t", broker.MaxTypeLen+1)} {
		if _, err := b.Publish(ctx, good, broker.Message{Type: typ}); !errors.Is(err, broker.ErrInvalidMessage) {
			t.Errorf("Publish with type %.40q: %v, want ErrInvalidMessage", typ, err)
		}
	}
	// Nothing of the above reached the log; the longest valid topic works.
	longest := (topicName("") + strings.Repeat("x!~", broker.MaxTopicLen))[:broker.MaxTopicLen]
	r := s.subscribe(t, b, []string{good, longest}, nil)
	s.waitPosition(t, r, good)
	id := s.publish(t, nil, b, good, broker.Message{})
	id2 := s.publish(t, nil, b, longest, broker.Message{})
	s.until(t, r, "two events", func(r *Reader) bool { return r.Total() >= 2 })
	CheckSequence(t, good, r.Items[good], Want{IDs: []string{id}})
	CheckSequence(t, longest, r.Items[longest], Want{IDs: []string{id2}})
}

// testManySubscribers runs 200 subscribers (each replaying from the start
// while the publishers run) and 8 publishers on two topics.
func (s *suite) testManySubscribers(t *testing.T) {
	const subs, publishers, each = 200, 8, 25
	b := s.f.New(t, Options{HistorySize: 10000})
	topics := []string{topicName("many1"), topicName("many2")}
	perTopic := publishers / len(topics) * each
	ref := s.subscribe(t, b, topics, nil)
	from := broker.Cursor{}
	for _, topic := range topics {
		from[topic] = s.waitPosition(t, ref, topic)
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	per := make([][]string, publishers)
	for p := range publishers {
		wg.Go(func() {
			<-start
			topic := topics[p%len(topics)]
			for i := range each {
				id, err := s.tryPublish(t, nil, b, topic, broker.Message{Data: fmt.Sprintf("p%d-%d", p, i)})
				if err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
				per[p] = append(per[p], id)
			}
		})
	}
	readers := make([]*Reader, subs)
	for i := range readers {
		wg.Go(func() {
			<-start
			sub, err := b.Subscribe(t.Context(), topics, from)
			if err != nil {
				t.Errorf("subscriber %d: %v", i, err)
				return
			}
			defer sub.Close()
			r := NewReader(sub)
			if !r.Until(s.f.Timeout, func(r *Reader) bool { return r.Total() >= 2*perTopic }) {
				t.Errorf("subscriber %d: %s", i, r)
			}
			readers[i] = r
		})
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	s.until(t, ref, "every event", func(r *Reader) bool { return r.Total() >= 2*perTopic })
	for k, topic := range topics {
		seq, err := ParseSequence(topic, ref.Items[topic])
		if err != nil {
			t.Fatal(err)
		}
		var mine [][]string
		for p := k; p < publishers; p += len(topics) {
			mine = append(mine, per[p])
		}
		if !checkOrder(t, topic, seq.IDs(), mine) {
			return
		}
		bad := 0
		for i, r := range readers {
			if !CheckSequenceOK(t, topic, r.Items[topic], Want{Position: from[topic], IDs: seq.IDs()}) {
				t.Errorf("subscriber %d differs from the reference", i)
				if bad++; bad >= 3 {
					return
				}
			}
		}
	}
}

// testCloseRace closes subscriptions and then the broker while publishers
// and subscribers churn: every call returns or fails with ErrClosed, nothing
// deadlocks, and every subscription ends (run it with -race).
func (s *suite) testCloseRace(t *testing.T) {
	// The long-lived subscribers take nothing until the end: a queue limit
	// far above what the publishers manage keeps them from overflowing.
	b := s.f.New(t, Options{QueueLimit: 1 << 22})
	topics := []string{topicName("race1"), topicName("race2"), topicName("race3")}
	var published atomic.Int64
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				_, err := s.tryPublish(t, nil, b, topics[(p+i)%len(topics)], broker.Message{Data: fmt.Sprint(i)})
				if errors.Is(err, broker.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				published.Add(1)
			}
		})
	}
	var churned atomic.Int64
	for k := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ctx, cancel := context.WithCancel(context.Background())
				from := broker.Cursor{topics[0]: []string{"", "?"}[i%2]}
				sub, err := b.Subscribe(ctx, topics[:1+(k+i)%len(topics)], from)
				if err != nil {
					cancel()
					if !errors.Is(err, broker.ErrClosed) {
						t.Errorf("Subscribe: %v", err)
					}
					return
				}
				r := NewReader(sub)
				r.Until(s.f.Timeout, func(r *Reader) bool { return r.Ended || r.Total() > 0 })
				if i%2 == 0 {
					sub.Close()
				} else {
					cancel()
				}
				if !r.UntilEnd(s.f.Timeout) {
					t.Errorf("a churned subscription did not end: %s", r)
				} else if !errors.Is(r.Err, broker.ErrClosed) && !errors.Is(r.Err, context.Canceled) {
					t.Errorf("a churned subscription ended with %v", r.Err)
				}
				cancel()
				churned.Add(1)
			}
		})
	}
	var long []*Reader
	for range 10 {
		long = append(long, s.subscribe(t, b, topics, nil))
	}
	// Let everybody make progress, then close the broker under them.
	deadline := time.Now().Add(s.f.Timeout)
	for published.Load() < 200 || churned.Load() < 20 {
		if time.Now().After(deadline) {
			t.Errorf("no progress: %d published, %d subscriptions churned", published.Load(), churned.Load())
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.f.Timeout):
		t.Fatal("publishers or subscribers still running after Broker.Close")
	}
	for i, r := range long {
		if !r.UntilEnd(s.f.Timeout) || !errors.Is(r.Err, broker.ErrClosed) {
			t.Errorf("subscription %d: want ErrClosed after Broker.Close, got %s", i, r)
			continue
		}
		for _, topic := range topics {
			if _, err := ParseSequence(topic, r.Items[topic]); err != nil && len(r.Items[topic]) > 0 {
				t.Errorf("subscription %d: %v", i, err)
			}
		}
	}
}
