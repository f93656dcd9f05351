package redisbroker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// Subscribers resume from the exact trim boundary (the last event before
// the oldest retained one) while publishers trim the stream under them and
// the pub/sub connections are killed: every subscriber's sequence is the
// log after its position, or an honest reset followed by the log after
// the new position.
func TestTrimBoundary(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	cfg := Config{Prefix: "rt150", HistorySize: 150, QueueLimit: 1 << 20, Logger: warnLogger()}
	a := newBroker(t, r, cfg)
	p := newBroker(t, r, cfg)
	topic := uniqueTopic("trim")
	l := newPubLog()
	for range 400 {
		l.add(t, publishRetry(t, p, topic, broker.Message{Data: "seed"}))
	}
	boundary := func() string {
		first, err := c.XRangeN(t.Context(), "rt150:{"+topic+"}:s", "-", "+", 1).Result()
		if err != nil || len(first) == 0 {
			t.Fatalf("XRANGE: %v %v", first, err)
		}
		epoch := l.epochs[0]
		fid, _ := parseStreamID(first[0].ID)
		var cursor string
		for _, sid := range l.sorted(epoch) {
			if !sid.less(fid) {
				break
			}
			cursor = formatID(epoch, sid)
		}
		return cursor
	}
	// Quiet stream: resuming at the boundary misses nothing. (It may get
	// a conservative truncation reset: Redis does not tell which entry
	// was trimmed last, so a cursor below the first retained entry's
	// predecessor ID — ms-1-max when its seq is 0 — cannot be told apart
	// from one that missed entries.)
	cursor := boundary()
	exact := subscribe(t, p, []string{topic}, broker.Cursor{topic: cursor})
	waitLast(t, exact, topic, l.last())
	seq, err := brokertest.ParseSequence(topic, exact.Items[topic])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seq.IDs(), logIDs(t, c, "rt150", topic); !slices.Equal(got, want) {
		t.Errorf("resuming at the trim boundary %q: %d events, want the %d retained", cursor, len(got), len(want))
	}
	if seq.Reset != nil {
		t.Logf("resuming at the trim boundary %q: conservative %q reset, position %q", cursor, seq.Reset.Reason, seq.Position.ID)
	}

	var stop sync.WaitGroup
	done := make(chan struct{})
	for k := range 3 {
		stop.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				id, err := []*Broker{a, p}[(k+i)%2].Publish(context.Background(), topic, broker.Message{Data: fmt.Sprint(k, "-", i)})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				l.add(t, id)
			}
		})
	}
	var readers []*brokertest.Reader
	for i := range 40 {
		cursor := boundary() // the published ID just before the first retained entry
		if i%10 == 5 {
			c.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
		}
		readers = append(readers, subscribe(t, []*Broker{a, p}[i%2], []string{topic}, broker.Cursor{topic: cursor}))
	}
	close(done)
	stop.Wait()
	if t.Failed() {
		return
	}
	last := l.last()
	drain(t, readers, "every event", func(rd *brokertest.Reader) bool { return rd.LastID(topic) == last })
	resets := 0
	for i, rd := range readers {
		if !checkSegments(t, topic, rd.Items[topic], l, true) {
			t.Fatalf("reader %d", i)
		}
		if rd.Items[topic][0].Kind == broker.KindReset {
			resets++
		}
	}
	t.Logf("%d of %d subscribers got a truncation reset", resets, len(readers))
}
