package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

// TestRefillKeepsBufferedEvents is issue 9's item 5, made deterministic: a
// load round reads the stream's head, then a burst larger than the history
// is published before its page read goes out, so the page finds the entries
// after the member's cursor trimmed and the round starts over. Every event
// of the burst reached the replica over pub/sub after the head was read (the
// channel was subscribed before), so the subscriber misses nothing: it must
// get the whole burst without a reset, as membroker delivers it. Before the
// fix the next round trusted the trimmed stream alone: a "truncated" reset.
func TestRefillKeepsBufferedEvents(t *testing.T) {
	for _, mode := range []string{"loading", "live"} {
		t.Run(mode, func(t *testing.T) { testRefillKeepsBufferedEvents(t, mode) })
	}
}

func testRefillKeepsBufferedEvents(t *testing.T, mode string) {
	// One entry per stream node, so that MAXLEN ~ trims to the history size.
	r := testredis.Start(t, testredis.WithArgs("--stream-node-max-entries", "1"))
	const history, burst = 4, 12
	prefix := "refill" + mode
	gate := newReadGate()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	c.AddHook(gate)
	b := newBroker(t, r, Config{Client: c, Prefix: prefix, HistorySize: history, Logger: warnLogger()})
	pub := newBroker(t, r, Config{Prefix: prefix, HistorySize: history, Logger: warnLogger()})
	topic := uniqueTopic("refill")
	ctx := t.Context()

	var ids []string
	publish := func(n int) {
		t.Helper()
		for range n {
			id, err := pub.Publish(ctx, topic, broker.Message{Data: fmt.Sprint(len(ids))})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	publish(3)

	var sub *brokertest.Reader
	switch mode {
	case "loading":
		// A subscriber resuming at the last event: its first round.
		gate.arm()
		sub = subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[2]})
	case "live":
		// A live subscriber whose pub/sub connection dropped: the refill
		// round after the resubscription.
		sub = subscribe(t, b, []string{topic}, nil)
		if got := position(t, sub, topic); got != ids[2] {
			t.Fatalf("position %s, want %s", got, ids[2])
		}
		gate.arm()
		admin := redis.NewClient(&redis.Options{Addr: r.Addr})
		defer admin.Close()
		if err := admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-gate.blocked:
	case <-time.After(waitTimeout):
		t.Fatalf("the round's page read never came: %s", sub)
	}
	publish(burst)
	// Wait until the replica buffered the whole burst from pub/sub.
	tp := b.topicForTest(topic)
	deadline := time.Now().Add(waitTimeout)
	for {
		tp.mu.Lock()
		n := len(tp.buf)
		tp.mu.Unlock()
		if n >= burst {
			break
		}
		if time.Now().After(deadline) {
			gate.release()
			t.Fatalf("the replica buffered %d of the %d events of the burst", n, burst)
		}
		time.Sleep(5 * time.Millisecond)
	}
	gate.release()

	last := ids[len(ids)-1]
	sub.Until(waitTimeout, func(r *brokertest.Reader) bool {
		evs, resets := eventsAndResets(r.Items[topic])
		return len(resets) > 0 || len(evs) > 0 && evs[len(evs)-1] == last
	})
	evs, resets := eventsAndResets(sub.Items[topic])
	if len(resets) > 0 {
		t.Fatalf("the subscriber after %s got resets %v, though the replica had buffered the whole burst; events %v", ids[2], resets, evs)
	}
	if want := ids[3:]; strings.Join(evs, ",") != strings.Join(want, ",") {
		t.Fatalf("the subscriber after %s got %v, want %v", ids[2], evs, want)
	}
}

// eventsAndResets returns the IDs of the events and the reasons of the
// resets among items.
func eventsAndResets(items []*broker.Event) (ids []string, resets []broker.ResetReason) {
	for _, e := range items {
		switch e.Kind {
		case broker.KindEvent:
			ids = append(ids, e.ID)
		case broker.KindReset:
			resets = append(resets, e.Reason)
		}
	}
	return ids, resets
}

// topicForTest returns the replica-local state of topic.
func (b *Broker) topicForTest(topic string) *topic {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.topics[b.channel(topic)]
}

// readGate is a go-redis hook that, once armed, holds the next page read
// (<fn>_read with a count above 0) until released.
type readGate struct {
	mu      sync.Mutex
	armed   bool
	blocked chan struct{} // closed when the held read arrived
	done    chan struct{} // closed by release
}

func newReadGate() *readGate {
	return &readGate{blocked: make(chan struct{}), done: make(chan struct{})}
}

func (g *readGate) arm() { g.mu.Lock(); g.armed = true; g.mu.Unlock() }

func (g *readGate) release() { close(g.done) }

func (g *readGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *readGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		a := cmd.Args()
		if len(a) >= 6 && (cmd.Name() == "fcall" || cmd.Name() == "fcall_ro") && strings.HasSuffix(fmt.Sprint(a[1]), "_read") && fmt.Sprint(a[len(a)-1]) != "0" {
			g.mu.Lock()
			hold := g.armed
			g.armed = false
			g.mu.Unlock()
			if hold {
				close(g.blocked)
				<-g.done
			}
		}
		return next(ctx, cmd)
	}
}

func (g *readGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Redis itself drops a pub/sub connection that falls behind
// (client-output-buffer-limit pubsub): a burst of large events must still
// reach every live subscriber, complete and in order, from the stream.
func TestOutputBufferLimitKill(t *testing.T) {
	r := testredis.Start(t, testredis.WithArgs("--client-output-buffer-limit", "pubsub 256kb 128kb 1"))
	c := r.Client(t)
	b := newBroker(t, r, Config{QueueLimit: 1 << 16, Logger: warnLogger()})
	topics := []string{uniqueTopic("burst1"), uniqueTopic("burst2")}
	var readers []*brokertest.Reader
	for i := range 4 {
		rd := subscribe(t, b, topics[i%2:i%2+1], nil)
		position(t, rd, topics[i%2])
		readers = append(readers, rd)
	}
	l := map[string]*pubLog{topics[0]: newPubLog(), topics[1]: newPubLog()}
	data := strings.Repeat("b", 200<<10)
	for round := range 3 {
		pipe := c.Pipeline()
		var cmds []*redis.Cmd
		var to []string
		for i := range 24 {
			topic := topics[i%2]
			cmds = append(cmds, pipe.FCall(t.Context(), "herald_publish", []string{topic}, "", fmt.Sprint(round, i, data)))
			to = append(to, topic)
		}
		if _, err := pipe.Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
		for i, cmd := range cmds {
			l[to[i]].add(t, cmd.Val().(string))
		}
	}
	drain(t, readers, "every event", func(rd *brokertest.Reader) bool {
		for topic := range rd.Items {
			return rd.LastID(topic) == l[topic].last()
		}
		return false
	})
	for i, rd := range readers {
		for topic, items := range rd.Items {
			if !checkSegments(t, topic, items, l[topic], true) {
				t.Fatalf("reader %d", i)
			}
		}
	}
	t.Logf("%d events refilled from the stream", b.refilled.Load())
}

// A pub/sub gap longer than the queue limit is the broker's lag, not the
// subscribers': refilling it must not disconnect every (fast) subscriber of
// the topic at once as a slow consumer — a reconnection herd right when
// Redis is back. A subscriber that really takes nothing is still cut.
func TestRefillIsNotSlowness(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{QueueLimit: 20, Logger: warnLogger()})
	topic := uniqueTopic("herd")
	l := newPubLog()
	l.add(t, publishRetry(t, b, topic, broker.Message{Data: "first"}))
	var rds []*brokertest.Reader
	for range 4 {
		rd := subscribe(t, b, []string{topic}, nil)
		position(t, rd, topic)
		rds = append(rds, rd)
	}
	stuck := subscribe(t, b, []string{topic}, nil) // never takes after this
	position(t, stuck, topic)
	poll(t, "a subscribed pub/sub connection", func() bool {
		ch := "herald:{" + topic + "}"
		return c.PubSubNumSub(t.Context(), ch).Val()[ch] > 0 && b.Connected()
	})
	cmds, err := c.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		p.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
		for i := range 50 {
			p.FCall(t.Context(), "herald_publish", []string{topic}, "", fmt.Sprint("gap ", i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds[1:] {
		l.add(t, cmd.(*redis.Cmd).Val().(string))
	}
	for i, rd := range rds {
		if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.LastID(topic) == l.last() }) {
			t.Fatalf("reader %d, taking all the time: %s", i, rd)
		}
		checkSegments(t, topic, rd.Items[topic], l, true)
	}
	if b.refilled.Load() == 0 {
		t.Errorf("the gap was not refilled from the stream")
	}
	// Live events beyond the limit still cut the subscriber that takes
	// nothing.
	for chunk := range 3 {
		for i := range 10 {
			l.add(t, publishRetry(t, b, topic, broker.Message{Data: fmt.Sprint("live ", chunk, i)}))
		}
		for i, rd := range rds {
			if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.LastID(topic) == l.last() }) {
				t.Fatalf("reader %d: %s", i, rd)
			}
		}
	}
	if !stuck.UntilEnd(waitTimeout) || !errors.Is(stuck.Err, broker.ErrSlowConsumer) {
		t.Errorf("the subscriber that takes nothing: %s, want ErrSlowConsumer", stuck)
	}
}
