package brokertest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

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
		{td, Want{Reset: []broker.ResetReason{broker.ReasonUnknown}, IDs: d}},
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
