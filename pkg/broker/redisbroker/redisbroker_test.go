package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

var idPattern = regexp.MustCompile(`^[0-9a-z]+_[0-9a-f]{8}-[0-9]+-[0-9]+$`)

// Two brokers on separate clients act as two replicas; a plain client
// publishes with FCALL like a service in another language would.
func TestReplicas(t *testing.T) {
	r := testredis.Start(t)
	a := newBroker(t, r, Config{Logger: warnLogger()})
	b := newBroker(t, r, Config{Logger: warnLogger()})
	plain := r.Client(t)
	ctx := t.Context()
	t1, t2 := uniqueTopic("orders"), uniqueTopic("users")

	ra := subscribe(t, a, []string{t1, t2}, nil)
	p1, p2 := position(t, ra, t1), position(t, ra, t2)
	// A topic without events gets an epoch when subscribed to (touch): its
	// position names the topic and the incarnation.
	for _, c := range []struct{ topic, pos string }{{t1, p1}, {t2, p2}} {
		e, sid, ok := parseID(c.pos)
		if !ok || isNoEpoch(e) || epochTag(e) != topicTag(c.topic) || sid != (streamID{}) {
			t.Errorf("position of fresh topic %s: %q, want <epoch>_%s-0-0", c.topic, c.pos, topicTag(c.topic))
		}
	}
	var ids1, ids2 []string
	data := map[string]string{}
	for i := range 10 {
		id, err := b.Publish(ctx, t1, broker.Message{Type: "via-b", Data: fmt.Sprint("b", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids1, data[id] = append(ids1, id), fmt.Sprint("b", i)
		v, err := plain.FCall(ctx, "herald_publish", []string{t1}, "via-fcall", fmt.Sprint("f", i)).Text()
		if err != nil {
			t.Fatalf("FCALL herald_publish: %v", err)
		}
		if !idPattern.MatchString(v) {
			t.Fatalf("FCALL returned %q", v)
		}
		ids1, data[v] = append(ids1, v), fmt.Sprint("f", i)
		id, err = b.Publish(ctx, t2, broker.Message{Data: fmt.Sprint("t2-", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids2 = append(ids2, id)
	}
	if !ra.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.Total() >= 30 }) {
		t.Fatalf("replica a: %s", ra)
	}
	seq, _ := brokertest.CheckSequence(t, t1, ra.Items[t1], brokertest.Want{Position: p1, IDs: ids1})
	brokertest.CheckSequence(t, t2, ra.Items[t2], brokertest.Want{Position: p2, IDs: ids2})
	for _, e := range seq.Events {
		if e.Data != data[e.ID] {
			t.Errorf("event %q: data %q, want %q", e.ID, e.Data, data[e.ID])
		}
		if d := time.Since(e.Time); d < 0 || d > time.Minute {
			t.Errorf("event %q: time %v", e.ID, e.Time)
		}
	}
	if want := logIDs(t, plain, DefaultPrefix, t1); !slices.Equal(ids1, want) {
		t.Errorf("the stream holds %q, publishes returned %q", want, ids1)
	}

	t.Run("single topic", func(t *testing.T) {
		cursor := ids1[4]
		rb := subscribe(t, b, []string{t1}, broker.Cursor{t1: cursor})
		id, err := a.Publish(ctx, t1, broker.Message{Data: "live via a"})
		if err != nil {
			t.Fatal(err)
		}
		all := append(ids1[:len(ids1):len(ids1)], id)
		waitLast(t, rb, t1, id)
		brokertest.CheckSequence(t, t1, rb.Items[t1], brokertest.Want{Position: cursor, IDs: all[5:]})
		waitLast(t, ra, t1, id)
		brokertest.CheckSequence(t, t1, ra.Items[t1], brokertest.Want{Position: p1, IDs: all})
	})

	t.Run("multi topic", func(t *testing.T) {
		c1, c2 := ids1[2], ids2[7]
		rb := subscribe(t, b, []string{t1, t2}, broker.Cursor{t1: c1, t2: c2})
		id2, err := plain.FCall(ctx, "herald_publish", []string{t2}, "", "live").Text()
		if err != nil {
			t.Fatal(err)
		}
		waitLast(t, rb, t2, id2)
		log1 := logIDs(t, plain, DefaultPrefix, t1)
		waitLast(t, rb, t1, log1[len(log1)-1])
		brokertest.CheckSequence(t, t1, rb.Items[t1], brokertest.Want{Position: c1, IDs: log1[3:]})
		brokertest.CheckSequence(t, t2, rb.Items[t2], brokertest.Want{Position: c2, IDs: append(ids2[8:], id2)})
	})
}

// The library validates what other services send, and is reloaded when
// Redis lost it.
func TestFunctionLibrary(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	ctx := t.Context()
	b := newBroker(t, r, Config{Prefix: "staging", Logger: warnLogger()})
	topic := uniqueTopic("lib")

	for _, tc := range []struct {
		name  string
		keys  []string
		args  []any
		error string
	}{
		{"reserved type", []string{topic}, []any{"herald.reset", "x"}, "reserved"},
		{"newline in type", []string{topic}, []any{"a\nb", "x"}, "CR, LF or NUL"},
		{"NUL in type", []string{topic}, []any{"a\x00b", "x"}, "CR, LF or NUL"},
		{"long type", []string{topic}, []any{strings.Repeat("t", 257), "x"}, "longer than 256"},
		{"space in topic", []string{"a b"}, []any{"t", "x"}, "invalid topic"},
		{"long topic", []string{strings.Repeat("x", 257)}, []any{"t", "x"}, "invalid topic"},
		{"missing data", []string{topic}, []any{"t"}, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.FCall(ctx, "staging_publish", tc.keys, tc.args...).Err()
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("FCALL: %v, want an error mentioning %q", err, tc.error)
			}
		})
	}
	if n := c.Exists(ctx, "staging:{"+topic+"}:s").Val(); n != 0 {
		t.Errorf("rejected publishes created the stream")
	}

	id, err := c.FCall(ctx, "staging_publish", []string{topic}, "", "hello").Text()
	if err != nil || !idPattern.MatchString(id) {
		t.Fatalf("FCALL staging_publish: %q, %v", id, err)
	}
	if log := logIDs(t, c, "staging", topic); len(log) != 1 || log[0] != id {
		t.Errorf("stream staging:{%s}:s holds %q, want [%q]", topic, log, id)
	}
	// The default prefix's function is not this deployment's.
	if err := c.FCall(ctx, "herald_publish", []string{topic}, "", "x").Err(); err == nil {
		t.Errorf("herald_publish exists though only prefix staging was loaded")
	}

	// Redis lost its functions (restart without persistence, FLUSH): the
	// broker loads the library again and the publish goes through.
	if err := c.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	id2, err := b.Publish(ctx, topic, broker.Message{Data: "after flush"})
	if err != nil {
		t.Fatalf("Publish after FUNCTION FLUSH: %v", err)
	}
	if log := logIDs(t, c, "staging", topic); !slices.Equal(log, []string{id, id2}) {
		t.Errorf("stream holds %q, want %q", log, []string{id, id2})
	}

	// Configuration errors.
	for _, cfg := range []Config{{}, {URL: r.URL(), Prefix: "has:colon"}, {URL: "http://x"}, {URL: r.URL(), HistoryTTL: -1}} {
		if b, err := New(ctx, cfg); err == nil {
			b.Close()
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// N local subscribers of a topic cost one Redis channel subscription,
// released when the last one leaves.
func TestChannelRefcount(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	x, y := uniqueTopic("x"), uniqueTopic("y")
	chx, chy := "herald:{"+x+"}", "herald:{"+y+"}"
	numsub := func() (int64, int64) {
		m := c.PubSubNumSub(t.Context(), chx, chy).Val()
		return m[chx], m[chy]
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var xs []broker.Subscription
	for range 5 {
		s, err := b.Subscribe(ctx, []string{x}, nil)
		if err != nil {
			t.Fatal(err)
		}
		xs = append(xs, s)
	}
	ys := subscribe(t, b, []string{x, y}, nil)
	position(t, ys, y)
	poll(t, "one subscription per channel", func() bool { nx, ny := numsub(); return nx == 1 && ny == 1 })
	for _, s := range xs[:4] {
		s.Close()
	}
	if nx, _ := numsub(); nx != 1 {
		t.Errorf("channel %s has %d subscribers while one local subscriber remains", chx, nx)
	}
	ys.Sub.Close()
	poll(t, "y unsubscribed", func() bool { nx, ny := numsub(); return nx == 1 && ny == 0 })
	cancel() // the last subscriber of x goes with its context
	poll(t, "x unsubscribed", func() bool { nx, ny := numsub(); return nx == 0 && ny == 0 })
	// Subscribing again works (the channel is subscribed again).
	again := subscribe(t, b, []string{x}, nil)
	position(t, again, x)
	id, err := b.Publish(t.Context(), x, broker.Message{})
	if err != nil {
		t.Fatal(err)
	}
	waitLast(t, again, x, id)
}

// Killing the pub/sub connections while publishers run loses nothing: the
// broker refills every topic from its stream before going on live.
func TestGapRepairClientKill(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	var downs atomic.Int32
	cfg := Config{HistorySize: 1 << 20, QueueLimit: 1 << 20, Logger: warnLogger(), OnStateChange: func(up bool) {
		if !up {
			downs.Add(1)
		}
	}}
	a := newBroker(t, r, cfg)
	cfg.OnStateChange = nil
	p := newBroker(t, r, cfg)
	topics := []string{uniqueTopic("k1"), uniqueTopic("k2"), uniqueTopic("k3")}
	for _, topic := range topics {
		if _, err := p.Publish(t.Context(), topic, broker.Message{Data: "first"}); err != nil {
			t.Fatal(err)
		}
	}
	var readers []*brokertest.Reader
	for i := range 6 {
		readers = append(readers, subscribe(t, a, []string{topics[i%3], topics[(i+1)%3]}, nil))
	}
	pub := startPublishers([]broker.Broker{p, a}, topics, 3, 0, 5*time.Second)
	for k := range 5 {
		pub.waitMore(t, 60)
		// After the previous kill the brokers may still be reconnecting.
		poll(t, "a pub/sub connection to kill", func() bool {
			killed, err := c.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result()
			if err != nil {
				t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
			}
			return killed > 0
		})
		// Late subscribers resume from a cursor while the connection is
		// being repaired.
		for _, topic := range topics {
			log := logIDs(t, c, DefaultPrefix, topic)
			readers = append(readers, subscribe(t, a, []string{topic}, broker.Cursor{topic: log[len(log)/(k+2)]}))
		}
	}
	// A deterministic gap: the kill and a publish in one transaction, so
	// the event is published while the brokers are not subscribed.
	poll(t, "a pub/sub connection to kill", func() bool {
		ch := "herald:{" + topics[0] + "}"
		return c.PubSubNumSub(t.Context(), ch).Val()[ch] > 0 && a.Connected()
	})
	cmds, err := c.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
		p.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
		p.FCall(t.Context(), "herald_publish", []string{topics[0]}, "gap", "published while unsubscribed")
		return nil
	})
	if err != nil {
		t.Fatalf("MULTI CLIENT KILL + FCALL: %v", err)
	}
	if n, _ := cmds[0].(*redis.IntCmd).Result(); n == 0 {
		t.Fatalf("the transaction killed no pub/sub connection")
	}
	pub.waitMore(t, 60)
	pub.halt()
	if f := pub.failed(); len(f) > 0 {
		t.Fatalf("%d publishes failed, first: %v", len(f), f[0])
	}
	if n := a.refilled.Load(); n == 0 {
		t.Errorf("no event was refilled from the stream after the kills")
	} else {
		t.Logf("%d events refilled from the stream", n)
	}
	if downs.Load() == 0 {
		t.Errorf("the broker never noticed its connection was killed")
	}
	logs := map[string][]string{}
	for _, topic := range topics {
		logs[topic] = logIDs(t, c, DefaultPrefix, topic)
		if !pub.inOrder(topic, logs[topic]) {
			t.Fatalf("topic %q: the stream is not in publish order", topic)
		}
	}
	drain(t, readers, "every event", func(r *brokertest.Reader) bool {
		for topic, items := range r.Items {
			if len(items) == 0 || items[len(items)-1].ID != logs[topic][len(logs[topic])-1] {
				return false
			}
		}
		return len(r.Items) > 0
	})
	for i, rd := range readers {
		for topic := range rd.Items {
			if !checkAgainstLog(t, rd, topic, logs[topic]) {
				t.Fatalf("reader %d differs from the stream", i)
			}
		}
	}
}

// Pausing Redis makes publishes fail with ErrUnavailable; once it is back,
// subscribers have every event the stream holds, including every publish
// that succeeded.
func TestPause(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	var states []bool
	var statesMu = make(chan struct{}, 1)
	statesMu <- struct{}{}
	a := newBroker(t, r, Config{Logger: warnLogger(), OnStateChange: func(up bool) {
		<-statesMu
		states = append(states, up)
		statesMu <- struct{}{}
	}})
	p := newBroker(t, r, Config{Logger: warnLogger()})
	topics := []string{uniqueTopic("p1"), uniqueTopic("p2")}
	for _, topic := range topics {
		if _, err := p.Publish(t.Context(), topic, broker.Message{}); err != nil {
			t.Fatal(err)
		}
	}
	var readers []*brokertest.Reader
	for i := range 4 {
		readers = append(readers, subscribe(t, a, topics[i%2:i%2+1], nil))
	}
	pub := startPublishers([]broker.Broker{p}, topics, 2, 0, 500*time.Millisecond)
	pub.waitMore(t, 50)
	r.Pause(t)
	poll(t, "failed publishes", func() bool { return len(pub.failed()) >= 2 })
	poll(t, "the broker to notice", func() bool { return !a.Connected() })
	time.Sleep(3 * time.Second) // the outage lasts
	r.Unpause(t)
	pub.waitMore(t, 50)
	pub.halt()
	for _, err := range pub.failed() {
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("publish during the pause: %v, want ErrUnavailable", err)
		}
	}
	poll(t, "the broker to reconnect", a.Connected)
	<-statesMu
	if len(states) < 2 || states[len(states)-2] || !states[len(states)-1] {
		t.Errorf("state changes %v, want ... false, true", states)
	}
	statesMu <- struct{}{}
	for _, topic := range topics {
		log := logIDs(t, c, DefaultPrefix, topic)
		if !pub.inOrder(topic, log) {
			t.Fatalf("topic %q: a successful publish is missing from the stream", topic)
		}
		var rs []*brokertest.Reader
		for i, rd := range readers {
			if i%2 == slices.Index(topics, topic) {
				rs = append(rs, rd)
			}
		}
		drain(t, rs, "every event", func(rd *brokertest.Reader) bool { return rd.LastID(topic) == log[len(log)-1] })
		for _, rd := range rs {
			checkAgainstLog(t, rd, topic, log)
		}
	}
}

// publishRetry publishes, retrying while Redis comes back.
func publishRetry(t testing.TB, b broker.Broker, topic string, msg broker.Message) string {
	t.Helper()
	var id string
	var err error
	poll(t, "a successful publish", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		id, err = b.Publish(ctx, topic, msg)
		if err != nil && !errors.Is(err, broker.ErrUnavailable) {
			t.Fatalf("Publish: %v", err)
		}
		return err == nil
	})
	return id
}

func publishN(t testing.TB, b broker.Broker, topic string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = publishRetry(t, b, topic, broker.Message{Data: fmt.Sprint(i)})
	}
	return ids
}

func TestRestart(t *testing.T) {
	t.Run("persistent", func(t *testing.T) {
		r := testredis.Start(t, testredis.WithPersistence())
		a := newBroker(t, r, Config{Logger: warnLogger()})
		p := newBroker(t, r, Config{Logger: warnLogger()})
		topic := uniqueTopic("durable")
		before := publishN(t, p, topic, 10)
		rd := subscribe(t, a, []string{topic}, nil)
		pos := position(t, rd, topic)
		more := publishN(t, p, topic, 5)
		waitLast(t, rd, topic, more[4])

		r.Restart(t)
		after := publishN(t, p, topic, 10)
		all := append(more, after...)
		waitLast(t, rd, topic, after[9])
		brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Position: pos, IDs: all})
		if e1, _, _ := parseID(before[0]); !strings.HasPrefix(after[0], e1+"-") {
			t.Errorf("epoch changed across a restart with persistence: %q then %q", before[0], after[0])
		}
		// An old cursor is still exact.
		rb := subscribe(t, p, []string{topic}, broker.Cursor{topic: before[3]})
		waitLast(t, rb, topic, after[9])
		brokertest.CheckSequence(t, topic, rb.Items[topic], brokertest.Want{Position: before[3], IDs: append(before[4:], all...)})
	})

	t.Run("ephemeral", func(t *testing.T) {
		r := testredis.Start(t)
		a := newBroker(t, r, Config{Logger: warnLogger()})
		p := newBroker(t, r, Config{Logger: warnLogger()})
		topic := uniqueTopic("volatile")
		rd := subscribe(t, a, []string{topic}, nil)
		pos := position(t, rd, topic)
		before := publishN(t, p, topic, 10)
		waitLast(t, rd, topic, before[9])

		r.Restart(t) // the stream, the epoch and the functions are gone
		after := publishN(t, p, topic, 5)
		waitLast(t, rd, topic, after[4])
		items := rd.Items[topic]
		cut := -1
		for i, e := range items {
			if e.Kind == broker.KindReset {
				cut = i
				break
			}
		}
		if cut < 0 {
			t.Fatalf("no reset after Redis lost the stream: %d items", len(items))
		}
		brokertest.CheckSequence(t, topic, items[:cut], brokertest.Want{Position: pos, IDs: before})
		brokertest.CheckSequence(t, topic, items[cut:], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonEpoch}, IDs: after})
		if e1, _, _ := parseID(before[0]); strings.HasPrefix(after[0], e1+"-") {
			t.Errorf("same epoch after Redis lost the stream: %q then %q", before[0], after[0])
		}
		// A client resuming with an old cursor is told, then gets the rest.
		rb := subscribe(t, p, []string{topic}, broker.Cursor{topic: before[9]})
		waitLast(t, rb, topic, after[4])
		brokertest.CheckSequence(t, topic, rb.Items[topic], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonEpoch}, IDs: after})
	})
}

// With Redis down, Subscribe still succeeds, Publish fails with
// ErrUnavailable, and the subscriptions start once Redis is back with
// every event published after Subscribe returned.
func TestSubscribeWhileDown(t *testing.T) {
	r := testredis.Start(t, testredis.WithPersistence())
	a := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("down")
	ids := publishN(t, a, topic, 3)
	r.Stop(t)
	poll(t, "the broker to notice", func() bool { return !a.Connected() })

	ctx := t.Context()
	start := time.Now()
	live := subscribe(t, a, []string{topic}, nil)
	resumed := subscribe(t, a, []string{topic}, broker.Cursor{topic: ids[0]})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Subscribe took %v with Redis down", d)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := a.Publish(pctx, topic, broker.Message{})
	cancel()
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish with Redis down: %v, want ErrUnavailable", err)
	}
	live.Take()
	if live.Total() != 0 || live.HasPosition(topic) {
		t.Errorf("items delivered while Redis is down: %s", live)
	}

	r.Start(t)
	next := publishRetry(t, a, topic, broker.Message{Data: "back"})
	waitLast(t, live, topic, next)
	waitLast(t, resumed, topic, next)
	all := append(ids, next)
	// The live subscription never learnt the head: it starts at most a
	// clock-skew tolerance before Subscribe, so it may include a few
	// earlier events; it must include everything after.
	brokertest.CheckSequence(t, topic, live.Items[topic], brokertest.Want{IDs: all, SuffixMin: 1})
	brokertest.CheckSequence(t, topic, resumed.Items[topic], brokertest.Want{Position: ids[0], IDs: all[1:]})
	poll(t, "the broker to reconnect", a.Connected)
}

// TestHistoryTTL checks age-based trimming (MINID ~ trims whole stream
// nodes of 100 entries).
func TestHistoryTTL(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Prefix: "ttl", HistorySize: 100000, HistoryTTL: 300 * time.Millisecond, Logger: warnLogger()})
	topic := uniqueTopic("ttl")
	old := publishN(t, b, topic, 250)
	var last string
	poll(t, "old events to be trimmed", func() bool {
		last = publishRetry(t, b, topic, broker.Message{Data: "new"})
		return c.XLen(t.Context(), "ttl:{"+topic+"}:s").Val() < 200
	})
	rd := subscribe(t, b, []string{topic}, broker.Cursor{topic: old[0]})
	waitLast(t, rd, topic, last)
	seq, err := brokertest.ParseSequence(topic, rd.Items[topic])
	if err != nil {
		t.Fatal(err)
	}
	if seq.Reset == nil || seq.Reset.Reason != broker.ReasonTruncated {
		t.Errorf("resuming from a trimmed event: reset %v, want %q", seq.Reset, broker.ReasonTruncated)
	}
	checkAgainstLog := logIDs(t, c, "ttl", topic)
	brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, IDs: checkAgainstLog})
}

// A bounded load test: 1,000 subscribers on 3 replicas, several publishers
// on every replica, subscriptions made while publishing.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const subscribers, replicas, nTopics, perPublisher, publishers = 1000, 3, 4, 150, 4
	r := testredis.Start(t)
	c := r.Client(t)
	var bs []broker.Broker
	for range replicas {
		bs = append(bs, newBroker(t, r, Config{HistorySize: 10000, QueueLimit: 10000, Logger: warnLogger()}))
	}
	topics := make([]string, nTopics)
	for i := range topics {
		topics[i] = uniqueTopic(fmt.Sprint("load", i))
		publishN(t, bs[0], topics[i], 10)
	}
	firstLog := map[string][]string{}
	for _, topic := range topics {
		firstLog[topic] = logIDs(t, c, DefaultPrefix, topic)
	}
	pub := startPublishers(bs, topics, publishers, perPublisher, 10*time.Second)
	readers := make([]*brokertest.Reader, subscribers)
	var wg sync.WaitGroup
	const subscribing = 8
	for g := range subscribing {
		wg.Go(func() {
			for i := g; i < subscribers; i += subscribing {
				ts := []string{topics[i%nTopics], topics[(i+1)%nTopics]}
				var from broker.Cursor
				if i%2 == 1 {
					from = broker.Cursor{ts[0]: firstLog[ts[0]][i%10], ts[1]: firstLog[ts[1]][(i+3)%10]}
				}
				sub, err := bs[i%replicas].Subscribe(t.Context(), ts, from)
				if err != nil {
					t.Errorf("Subscribe: %v", err)
					return
				}
				t.Cleanup(func() { sub.Close() })
				readers[i] = brokertest.NewReader(sub)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	poll(t, "the publishers", func() bool { return pub.succeeded() >= publishers*perPublisher })
	pub.halt()
	if f := pub.failed(); len(f) > 0 {
		t.Fatalf("%d publishes failed, first: %v", len(f), f[0])
	}
	logs := map[string][]string{}
	for _, topic := range topics {
		logs[topic] = logIDs(t, c, DefaultPrefix, topic)
	}
	drain(t, readers, "every event at every subscriber", func(rd *brokertest.Reader) bool {
		for topic, items := range rd.Items {
			if len(items) == 0 || items[len(items)-1].ID != logs[topic][len(logs[topic])-1] {
				return false
			}
		}
		return len(rd.Items) == 2
	})
	bad := 0
	for i, rd := range readers {
		for topic := range rd.Items {
			if !checkAgainstLog(t, rd, topic, logs[topic]) {
				t.Errorf("subscriber %d differs", i)
				if bad++; bad > 3 {
					t.FailNow()
				}
			}
		}
	}
}

// A negative HistorySize keeps no history, like membroker: only the head
// is an exact cursor.
func TestNoHistory(t *testing.T) {
	r := testredis.Start(t)
	b := newBroker(t, r, Config{Prefix: "nohist", HistorySize: -1, Logger: warnLogger()})
	topic := uniqueTopic("none")
	ids := publishN(t, b, topic, 3)
	head := subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[2]})
	old := subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	position(t, old, topic)
	id := publishRetry(t, b, topic, broker.Message{Data: "live"})
	waitLast(t, head, topic, id)
	waitLast(t, old, topic, id)
	brokertest.CheckSequence(t, topic, head.Items[topic], brokertest.Want{Position: ids[2], IDs: []string{id}})
	brokertest.CheckSequence(t, topic, old.Items[topic], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonTruncated}, Position: ids[2], IDs: []string{id}})
}

// The stream and epoch vanish while the pub/sub connection stays up (DEL,
// eviction, the keys expiring): live subscribers learn it from the next
// event's epoch and continue with the new epoch without a reset — they
// had every event of the old one, delivered over a subscription that never
// lapsed. A subscriber resuming with an old cursor gets the reset.
func TestStreamDeleted(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("deleted")
	rd := subscribe(t, b, []string{topic}, nil)
	pos := position(t, rd, topic)
	before := publishN(t, b, topic, 3)
	waitLast(t, rd, topic, before[2])
	if err := c.Del(t.Context(), "herald:{"+topic+"}:s", "herald:{"+topic+"}:e").Err(); err != nil {
		t.Fatal(err)
	}
	after := publishN(t, b, topic, 3)
	waitLast(t, rd, topic, after[2])
	items := rd.Items[topic]
	brokertest.CheckSequence(t, topic, items[:4], brokertest.Want{Position: pos, IDs: before})
	e2, _, _ := parseID(after[0])
	brokertest.CheckSequence(t, topic, items[4:], brokertest.Want{Position: formatID(e2, streamID{}), IDs: after})
	old := subscribe(t, b, []string{topic}, broker.Cursor{topic: before[1]})
	waitLast(t, old, topic, after[2])
	brokertest.CheckSequence(t, topic, old.Items[topic], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonEpoch}, IDs: after})
}
