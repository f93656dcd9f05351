package redisbroker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

// The stream key vanishes while its epoch key stays (DEL of the stream, or
// eviction under an allkeys-* maxmemory policy). The next XADD starts a new
// stream whose IDs may repeat or precede old ones — in one transaction they
// share the millisecond. No event may be lost silently nor share an ID with
// another.
func TestStreamLostEpochKept(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("evicted")
	ids := publishN(t, b, topic, 5)
	live := subscribe(t, b, []string{topic}, nil)
	position(t, live, topic)
	cmds, err := c.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		p.FCall(t.Context(), "herald_publish", []string{topic}, "", "A")
		p.Del(t.Context(), "herald:{"+topic+"}:s")
		p.FCall(t.Context(), "herald_publish", []string{topic}, "", "B")
		return nil
	})
	if err != nil {
		t.Fatalf("MULTI: %v", err)
	}
	idA, idB := cmds[0].(*redis.Cmd).Val().(string), cmds[2].(*redis.Cmd).Val().(string)
	if idA == idB {
		t.Errorf("two events got the same ID %q", idA)
	}
	idC := publishRetry(t, b, topic, broker.Message{Data: "C"})
	l := newPubLog()
	for _, id := range append(ids, idA, idB, idC) {
		l.add(t, id)
	}
	waitLast(t, live, topic, idC)
	got := map[string]bool{}
	for _, e := range live.Items[topic] {
		got[e.Data] = true
	}
	if !got["A"] || !got["B"] || !got["C"] {
		t.Errorf("live subscriber: got A %v, B %v, C %v; want all", got["A"], got["B"], got["C"])
	}
	checkSegments(t, topic, live.Items[topic], l, true)

	// A subscriber resuming inside the lost stream must be told.
	old := subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[2]})
	waitLast(t, old, topic, idC)
	seq, err := brokertest.ParseSequence(topic, old.Items[topic])
	if err != nil {
		t.Fatal(err)
	}
	if seq.Reset == nil {
		t.Errorf("resuming from %q after its stream was lost: no reset, events %q", ids[2], seq.IDs())
	}
}

// The stream and epoch are deleted while a subscriber replays a long
// history and publishers run: every subscriber sees, per epoch, the log
// after its position, and a reset at every epoch change.
func TestEpochChangeMidReplay(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	cfg := Config{Prefix: "rtep", HistorySize: 100000, QueueLimit: 1 << 20, Logger: warnLogger()}
	a := newBroker(t, r, cfg)
	p := newBroker(t, r, cfg)
	topic := uniqueTopic("epoch")
	l := newPubLog()
	// A long history: several XRANGE pages per replay.
	pipe := c.Pipeline()
	var cmds []*redis.Cmd
	for i := range 4000 {
		cmds = append(cmds, pipe.FCall(t.Context(), "rtep_publish", []string{topic}, "", fmt.Sprint("seed ", i)))
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		l.add(t, cmd.Val().(string))
	}
	first := formatID(l.epochs[0], l.sorted(l.epochs[0])[0])
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			id, err := p.Publish(context.Background(), topic, broker.Message{Data: fmt.Sprint("live ", i)})
			if err != nil {
				t.Errorf("Publish: %v", err)
				return
			}
			l.add(t, id)
		}
	})
	var readers []*brokertest.Reader
	for round := range 3 {
		for i := range 6 {
			readers = append(readers, subscribe(t, []*Broker{a, p}[i%2], []string{topic}, broker.Cursor{topic: first}))
		}
		time.Sleep(time.Duration(5*round) * time.Millisecond)
		if err := c.Del(t.Context(), "rtep:{"+topic+"}:s", "rtep:{"+topic+"}:e").Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	close(done)
	wg.Wait()
	if t.Failed() {
		return
	}
	last := l.last()
	drain(t, readers, "every event", func(rd *brokertest.Reader) bool { return rd.LastID(topic) == last })
	for i, rd := range readers {
		if !checkSegments(t, topic, rd.Items[topic], l, true) {
			t.Fatalf("reader %d", i)
		}
	}
}
