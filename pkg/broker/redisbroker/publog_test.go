package redisbroker

import (
	"slices"
	"sync"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// pubLog is every successful publish of one topic, per epoch in stream
// order, and the epochs in the order they appeared.
type pubLog struct {
	mu     sync.Mutex
	epochs []string
	ids    map[string][]streamID
}

func newPubLog() *pubLog { return &pubLog{ids: map[string][]streamID{}} }

func (l *pubLog) add(t testing.TB, id string) {
	t.Helper()
	epoch, sid, ok := parseID(id)
	if !ok {
		t.Errorf("Publish returned %q", id)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, seen := l.ids[epoch]; !seen {
		l.epochs = append(l.epochs, epoch)
	}
	l.ids[epoch] = append(l.ids[epoch], sid)
}

// sorted returns the stream IDs of epoch in log order (publishers may
// record them out of order).
func (l *pubLog) sorted(epoch string) []streamID {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.ids[epoch])
	slices.SortFunc(s, func(a, b streamID) int {
		switch {
		case a.less(b):
			return -1
		case b.less(a):
			return 1
		}
		return 0
	})
	return slices.Compact(s)
}

func (l *pubLog) last() string {
	l.mu.Lock()
	e := l.epochs[len(l.epochs)-1]
	l.mu.Unlock()
	s := l.sorted(e)
	return formatID(e, s[len(s)-1])
}

// checkSegments checks one topic's items against the publish log: the
// items are segments, each an optional KindReset (required for every
// segment but the first), a KindPosition, then events; the events of a
// segment are exactly the log's entries that follow its position in its
// epoch, without gap, duplicate or reordering. complete requires the last
// segment to reach the last published event.
func checkSegments(t testing.TB, topic string, items []*broker.Event, l *pubLog, complete bool) bool {
	t.Helper()
	var segs [][]*broker.Event
	for i, e := range items {
		if i == 0 || e.Kind == broker.KindReset || e.Kind == broker.KindPosition && items[i-1].Kind != broker.KindReset {
			segs = append(segs, nil)
		}
		segs[len(segs)-1] = append(segs[len(segs)-1], e)
	}
	if len(segs) == 0 {
		t.Errorf("topic %q: no item", topic)
		return false
	}
	prevComplete := false // the previous segment reached the end of its epoch's log
	for k, seg := range segs {
		s, err := brokertest.ParseSequence(topic, seg)
		if err != nil {
			t.Errorf("segment %d: %v", k, err)
			return false
		}
		// A new position without a reset is honest only when nothing was
		// missed: the previous segment had every event of its epoch (a
		// live subscriber whose stream was replaced while its
		// subscription never lapsed).
		if k > 0 && s.Reset == nil && !prevComplete {
			t.Errorf("topic %q, segment %d: a new position %q without a reset", topic, k, s.Position.ID)
			return false
		}
		epoch, pos, ok := parseID(s.Position.ID)
		if !ok {
			t.Errorf("topic %q: position %q is not an ID of this broker", topic, s.Position.ID)
			return false
		}
		if isNoEpoch(epoch) && len(s.Events) > 0 {
			// The topic had no epoch yet: the events are the start of the
			// epoch that was created next.
			epoch, _, _ = parseID(s.Events[0].ID)
			pos = streamID{}
		}
		var want []string
		for _, sid := range l.sorted(epoch) {
			if pos.less(sid) {
				want = append(want, formatID(epoch, sid))
			}
		}
		got := s.IDs()
		prevComplete = len(got) == len(want) || len(want) == 0
		if !complete || k < len(segs)-1 {
			if len(got) <= len(want) {
				want = want[:len(got)]
			}
		}
		if !slices.Equal(got, want) {
			n := 0
			for n < min(len(got), len(want)) && got[n] == want[n] {
				n++
			}
			t.Errorf("topic %q, segment %d (reset %v, position %q): %d events, want %d; first difference at %d: got %q, want %q",
				topic, k, s.Reset != nil, s.Position.ID, len(got), len(want), n, got[n:min(n+3, len(got))], want[n:min(n+3, len(want))])
			return false
		}
	}
	return true
}
