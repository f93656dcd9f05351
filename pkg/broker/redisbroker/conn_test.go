package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/faultproxy"
	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

// fcallPublish publishes through c, independently of any broker, and
// returns the event ID.
func fcallPublish(t *testing.T, c *redis.Client, topic, data string) string {
	t.Helper()
	id, err := c.FCall(t.Context(), DefaultPrefix+"_publish", []string{topic}, "", data).Text()
	if err != nil {
		t.Fatalf("FCALL publish: %v", err)
	}
	return id
}

// TestDeafPubSubReplaced: the path of every open connection to Redis dies
// without a RST (a host crash behind a stable address, a failover behind a
// VIP) while new connections pass. The broker must notice that its pub/sub
// connection no longer answers, replace it, and refill the topic from the
// stream: the subscriber gets every event exactly once, in order.
func TestDeafPubSubReplaced(t *testing.T) {
	r := testredis.Start(t)
	sw := faultproxy.NewSwitch(t, r.Addr)
	var mu sync.Mutex
	var reconnects []string
	reasons := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(reconnects) }
	// The broker's own client (from URL, with its timeouts and socket
	// options), every connection through the switch.
	b := newBroker(t, r, Config{URL: r.URL(), Logger: warnLogger(), wrapDial: func(base dialFunc) dialFunc { return sw.WithBase(base).Dial }, OnReconnect: func(reason string) {
		mu.Lock()
		reconnects = append(reconnects, reason)
		mu.Unlock()
	}})
	direct := r.Client(t)
	topic := uniqueTopic("deaf")
	rd := subscribe(t, b, []string{topic}, nil)
	position(t, rd, topic)
	waitLast(t, rd, topic, fcallPublish(t, direct, topic, "before"))

	if err := sw.Flip(); err != nil {
		t.Fatal(err)
	}
	flipped := time.Now()
	var afterFlip []string
	resumed := time.Duration(0)
	for i := 0; resumed == 0; i++ {
		if time.Since(flipped) > 10*time.Second {
			t.Fatalf("live delivery did not resume within 10s of the blackhole (%d events published meanwhile): %s", len(afterFlip), rd)
		}
		afterFlip = append(afterFlip, fcallPublish(t, direct, topic, fmt.Sprint("after-", i)))
		rd.Until(50*time.Millisecond, func(*brokertest.Reader) bool { return false })
		for _, e := range rd.Items[topic] {
			if slices.Contains(afterFlip, e.ID) {
				resumed = time.Since(flipped)
				break
			}
		}
	}
	t.Logf("live delivery resumed %v after the blackhole (%d events published meanwhile)", resumed.Round(time.Millisecond), len(afterFlip))
	last := ""
	for i := range 20 {
		last = fcallPublish(t, direct, topic, fmt.Sprint("later-", i))
	}
	waitLast(t, rd, topic, last)
	checkAgainstLog(t, rd, topic, logIDs(t, direct, DefaultPrefix, topic))
	if n := b.Reconnects(); n < 1 {
		t.Errorf("Reconnects() = %d after a deaf connection, want >= 1", n)
	}
	if got := reasons(); !slices.Contains(got, ReconnectUnanswered) {
		t.Errorf("OnReconnect reasons %v, want %q", got, ReconnectUnanswered)
	}
}

// TestPublishBlackholed: a publish through a connection that never answers
// returns by its ctx deadline with broker.ErrUnavailable, with the client
// the broker builds from Config.URL (no timeouts in the URL).
func TestPublishBlackholed(t *testing.T) {
	r := testredis.Start(t)
	p := faultproxy.New(t, r.Addr)
	b := newBroker(t, r, Config{URL: "redis://" + p.Addr() + "/0", Logger: warnLogger()})
	topic := uniqueTopic("hole")
	if _, err := b.Publish(t.Context(), topic, broker.Message{Data: "ok"}); err != nil {
		t.Fatalf("Publish before the blackhole: %v", err)
	}
	if err := p.Blackhole(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{300 * time.Millisecond, time.Second} {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		start := time.Now()
		_, err := b.Publish(ctx, topic, broker.Message{Data: "lost"})
		took := time.Since(start)
		cancel()
		if !errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("Publish with a %v deadline through a blackhole: %v, want ErrUnavailable", d, err)
		}
		if took > d+500*time.Millisecond {
			t.Errorf("Publish with a %v deadline through a blackhole returned after %v", d, took)
		}
		t.Logf("deadline %v: returned after %v: %v", d, took.Round(time.Millisecond), err)
	}
}

// TestSubscribeRefused: Redis refuses one channel (an ACL user without
// the permission), which is an error reply on the pub/sub connection, not
// a disconnect. The refused topic's subscription ends with a clear error;
// the other topics keep working, also across a reconnect.
func TestSubscribeRefused(t *testing.T) {
	r := testredis.Start(t)
	admin := r.Client(t)
	if err := admin.Do(t.Context(), "ACL", "SETUSER", "limited", "on", ">secret", "~*", "resetchannels", "&herald:{ok*}", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	b := newBroker(t, r, Config{
		URL:    "redis://limited:secret@" + r.Addr + "/0?dial_timeout=1s&read_timeout=1s&write_timeout=1s",
		Logger: warnLogger(),
	})
	okTopic, noTopic := uniqueTopic("ok"), uniqueTopic("no")
	ok := subscribe(t, b, []string{okTopic}, nil)
	position(t, ok, okTopic)
	no := subscribe(t, b, []string{noTopic}, nil)
	publish := func(n int) string {
		t.Helper()
		var id string
		for i := range n {
			var err error
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			id, err = b.Publish(ctx, okTopic, broker.Message{Data: fmt.Sprint(i)})
			cancel()
			if err != nil {
				t.Fatalf("Publish(%q): %v", okTopic, err)
			}
		}
		return id
	}
	// The allowed topic keeps working while the other is refused.
	if id := publish(5); !ok.Until(10*time.Second, func(r *brokertest.Reader) bool { return r.LastID(okTopic) == id }) {
		t.Fatalf("the allowed topic stalled after another topic's subscription was refused: %s", ok)
	}
	if !no.UntilEnd(10 * time.Second) {
		t.Fatalf("the subscription of the refused channel did not end: %s", no)
	}
	if !errors.Is(no.Err, ErrSubscribeRefused) || !strings.Contains(no.Err.Error(), "NOPERM") || !strings.Contains(no.Err.Error(), noTopic) {
		t.Errorf("the refused subscription ended with %v, want an error naming the topic and Redis's NOPERM", no.Err)
	}
	t.Logf("refused subscription ended with: %v", no.Err)
	if id := publish(5); !ok.Until(10*time.Second, func(r *brokertest.Reader) bool { return r.LastID(okTopic) == id }) {
		t.Fatalf("the allowed topic stalled after another topic's subscription was refused: %s", ok)
	}

	// A later subscription to an allowed topic works too.
	ok2Topic := uniqueTopic("ok")
	ok2 := subscribe(t, b, []string{ok2Topic}, nil)
	position(t, ok2, ok2Topic)
	id2, err := b.Publish(t.Context(), ok2Topic, broker.Message{Data: "x"})
	if err != nil {
		t.Fatal(err)
	}
	waitLast(t, ok2, ok2Topic, id2)

	// Kill the pub/sub connection: its replacement resubscribes only what
	// Redis allows, and the allowed topics are refilled and live again.
	if err := admin.Do(t.Context(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatalf("CLIENT KILL: %v", err)
	}
	waitLast(t, ok, okTopic, publish(5))
	checkAgainstLog(t, ok, okTopic, logIDs(t, admin, DefaultPrefix, okTopic))
	id2, err = b.Publish(t.Context(), ok2Topic, broker.Message{Data: "y"})
	if err != nil {
		t.Fatal(err)
	}
	waitLast(t, ok2, ok2Topic, id2)
}
