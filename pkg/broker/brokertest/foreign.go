package brokertest

import (
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
)

// testForeignPosition: a position taken from one topic is never placed on
// another (an app keeps its stored lastEventId while the user changes
// subscriptions). Every kind of position of topic X handed to topic Y — an
// event's ID, a position before X's first event, X's head — gets a reset for
// Y, followed by Y's whole retained history, whatever the two topics' logs
// look like: X behind Y, ahead of Y, at the same length.
func (s *suite) testForeignPosition(t *testing.T) {
	b := s.f.New(t, Options{HistorySize: 1000})
	l := newLog()
	a, bb, c, none := topicName("fa"), topicName("fb"), topicName("fc"), topicName("fnone")
	aIDs := s.publishN(t, l, b, a, 7, "a")
	bIDs := s.publishN(t, l, b, bb, 4, "b")
	cIDs := s.publishN(t, l, b, c, 5, "c")
	// The position of a topic that has never had an event.
	rn := s.subscribe(t, b, []string{none}, nil)
	nonePos := s.waitPosition(t, rn, none)
	rn.Sub.Close()

	foreign := []reasonCase{
		{"an event ID of a longer topic", aIDs[6]},
		{"an event ID of a shorter topic", bIDs[3]},
		{"an early event ID of another topic", aIDs[0]},
		{"the same-index event ID of another topic", aIDs[len(cIDs)-1]},
		{"the position of a topic without events", nonePos},
	}
	reasons := []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}
	readers := make([]*Reader, len(foreign))
	for i, fc := range foreign {
		readers[i] = s.subscribe(t, b, []string{c}, broker.Cursor{c: fc.cursor})
	}
	for i, fc := range foreign {
		t.Run(fc.name, func(t *testing.T) {
			r := readers[i]
			s.until(t, r, "c's history", func(r *Reader) bool { return r.Count(c) >= len(cIDs) })
			seq, _ := CheckSequence(t, c, r.Items[c], Want{Reset: reasons, IDs: cIDs})
			l.check(t, seq)
		})
	}
	// And the other way round: c's positions on a and on the empty topic.
	ra := s.subscribe(t, b, []string{a, none}, broker.Cursor{a: cIDs[4], none: cIDs[0]})
	s.until(t, ra, "a's history", func(r *Reader) bool { return r.Count(a) >= len(aIDs) && r.HasPosition(none) })
	seq, _ := CheckSequence(t, a, ra.Items[a], Want{Reset: reasons, IDs: aIDs})
	l.check(t, seq)
	CheckSequence(t, none, ra.Items[none], Want{Reset: reasons})
	// A topic's own positions still resume exactly.
	rc := s.subscribe(t, b, []string{c, none}, broker.Cursor{c: cIDs[2], none: nonePos})
	s.until(t, rc, "c's rest", func(r *Reader) bool { return r.Count(c) >= 2 && r.HasPosition(none) })
	CheckSequence(t, c, rc.Items[c], Want{Position: cIDs[2], IDs: cIDs[3:]})
	CheckSequence(t, none, rc.Items[none], Want{Position: nonePos})
}

type reasonCase struct{ name, cursor string }
