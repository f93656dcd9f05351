package brokertest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
)

func (s *suite) testTruncated(t *testing.T) {
	const size, n = 10, 300
	b := s.f.New(t, Options{HistorySize: size})
	l := newLog()
	topic := topicName("trunc")
	ids := s.publishN(t, l, b, topic, n, "trunc")
	r0 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	s.waitLast(t, r0, topic, ids[n-1])
	seq, ok := CheckSequence(t, topic, r0.Items[topic], Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, IDs: ids, SuffixMin: size})
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
		{"resumed from the first ID", r0, Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, IDs: ids[len(ids)-kept-1:]}},
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
		reasons      []broker.ResetReason
	}{
		{"question mark", "?", []broker.ResetReason{broker.ReasonUnknown}},
		{"garbage", "garbage-but-printable", []broker.ResetReason{broker.ReasonUnknown}},
		{"long number", strings.Repeat("9", 300), []broker.ResetReason{broker.ReasonUnknown}},
		{"control characters", "\x00\r\n\x7f", []broker.ResetReason{broker.ReasonUnknown}},
		// Ahead of this topic's head (or of another epoch, for brokers with
		// an epoch per topic).
		{"other topic's cursor", longIDs[19], []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}},
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
	seq, ok := CheckSequence(t, topic, r.Items[topic], Want{Reset: []broker.ResetReason{broker.ReasonEpoch}, IDs: bIDs})
	l.check(t, seq)
	CheckSequence(t, onlyA, r.Items[onlyA], Want{Reset: []broker.ResetReason{broker.ReasonEpoch}})
	if !ok {
		return
	}
	r2 := s.subscribe(t, b, []string{topic}, broker.Cursor{topic: seq.Position.ID})
	s.waitEvents(t, r2, topic, len(bIDs))
	CheckSequence(t, topic, r2.Items[topic], Want{Position: seq.Position.ID, IDs: bIDs})
	live := s.publish(t, l, b, onlyA, broker.Message{Data: "live"})
	s.waitLast(t, r, onlyA, live)
	CheckSequence(t, onlyA, r.Items[onlyA], Want{Reset: []broker.ResetReason{broker.ReasonEpoch}, IDs: []string{live}})
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
