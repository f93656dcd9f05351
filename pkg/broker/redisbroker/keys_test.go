package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/faultproxy"
	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

// retryUntilPublished publishes with pub until it returns an ID (a lost
// reply is an error), at most 20 times.
func retryUntilPublished(t *testing.T, what string, pub func() (string, error)) (string, int) {
	t.Helper()
	for tries := 1; tries <= 20; tries++ {
		id, err := pub()
		if err == nil {
			return id, tries
		}
		if !errors.Is(err, broker.ErrUnavailable) && !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("%s: %v", what, err)
		}
	}
	t.Fatalf("%s: no success in 20 tries", what)
	return "", 0
}

// TestKeysSurviveLostReplies: a proxy loses the reply of random publishes
// after Redis ran them; the publisher retries each with its key until it
// gets an answer. The log holds every event exactly once, in order, and
// each event's retries return its first ID. Through the broker and
// through FCALL from another client.
func TestKeysSurviveLostReplies(t *testing.T) {
	r := testredis.Start(t)
	p := faultproxy.NewReplyDropper(t, r.Addr)
	prefix := "keyretry"
	b := newBroker(t, r, Config{
		URL:    "redis://" + p.Addr() + "/0?dial_timeout=1s&read_timeout=1s&write_timeout=1s",
		Prefix: prefix,
		Logger: warnLogger(),
	})
	direct := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1})
	t.Cleanup(func() { direct.Close() })
	rng := rand.New(rand.NewPCG(1, 2))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	for _, path := range []string{"broker", "fcall"} {
		topic := uniqueTopic("keyretry-" + path)
		const n = 1000
		ids := make([]string, n)
		retried := 0
		for i := range n {
			msg := broker.Message{Type: "t", Data: fmt.Sprintf("event %d", i), Key: fmt.Sprintf("key-%d", i)}
			pub := func() (string, error) {
				if rng.IntN(5) == 0 {
					p.Arm()
				}
				if path == "broker" {
					return b.Publish(ctx, topic, msg)
				}
				return direct.FCall(ctx, prefix+"_publish", []string{topic}, msg.Type, msg.Data, msg.Key).Text()
			}
			id, tries := retryUntilPublished(t, fmt.Sprintf("%s publish %d", path, i), pub)
			retried += tries - 1
			ids[i] = id
			// One more retry, as a publisher that never saw the answer
			// would: the same ID.
			if again, _ := retryUntilPublished(t, "again", pub); again != id {
				t.Fatalf("%s publish %d: a retry returned %q, the first answer %q", path, i, again, id)
			}
		}
		got := logIDs(t, r.Client(t), prefix, topic)
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Fatalf("%s: log has %d entries, want the %d IDs returned, once each, in order", path, len(got), n)
		}
		t.Logf("%s: %d publishes, %d retries after lost replies (%d replies dropped so far), log exact", path, n, retried, p.Dropped())
		if retried < n/10 {
			t.Errorf("%s: only %d retries: the fault did not bite", path, retried)
		}
	}
}

// TestKeyAfterRestart: a key is remembered across a Redis restart with
// persistence, like the event.
func TestKeyAfterRestart(t *testing.T) {
	r := testredis.Start(t, testredis.WithPersistence())
	b := newBroker(t, r, Config{Prefix: "keyrestart", Logger: warnLogger()})
	topic := uniqueTopic("keyrestart")
	msg := broker.Message{Data: "kept", Key: "k-restart"}
	id, err := b.Publish(t.Context(), topic, msg)
	if err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	var again string
	poll(t, "a publish after the restart", func() bool {
		again, err = b.Publish(ctx, topic, msg)
		return err == nil
	})
	if again != id {
		t.Errorf("after the restart the key returned %q, before %q", again, id)
	}
	if n := len(logIDs(t, r.Client(t), "keyrestart", topic)); n != 1 {
		t.Errorf("log has %d entries, want 1", n)
	}
}

// TestKeyWindow: a key is remembered for the window, then a publish with
// it is a new event.
func TestKeyWindow(t *testing.T) {
	r := testredis.Start(t)
	const window = 300 * time.Millisecond
	b := newBroker(t, r, Config{Prefix: "keywin", IdempotencyWindow: window, Logger: warnLogger()})
	topic := uniqueTopic("keywin")
	msg := broker.Message{Data: "x", Key: "k"}
	id1, err := b.Publish(t.Context(), topic, msg)
	if err != nil {
		t.Fatal(err)
	}
	rec := "keywin:{" + topic + "}:k:k"
	c := r.Client(t)
	if ttl := c.PTTL(t.Context(), rec).Val(); ttl <= 0 || ttl > window {
		t.Fatalf("key record %s has PTTL %v, want (0, %v]", rec, ttl, window)
	}
	if v := c.Get(t.Context(), rec).Val(); !strings.HasPrefix(v, id1+" ") {
		t.Fatalf("key record %q does not start with the ID %q", v, id1)
	}
	poll(t, "the key record to expire", func() bool { return c.Exists(t.Context(), rec).Val() == 0 })
	id2, err := b.Publish(t.Context(), topic, broker.Message{Data: "other content is fine now", Key: "k"})
	if err != nil || id2 == id1 {
		t.Fatalf("after the window: %q, %v; want a new event", id2, err)
	}
	// Off: keys are ignored.
	off := newBroker(t, r, Config{Prefix: "keyoff", IdempotencyWindow: -1, Logger: warnLogger()})
	a, _ := off.Publish(t.Context(), topic, msg)
	bb, _ := off.Publish(t.Context(), topic, msg)
	if a == "" || a == bb {
		t.Errorf("with keys off: %q, %q; want two events", a, bb)
	}
}

// TestKeyRecordMemory measures what Redis spends on one key record, the
// figure the documentation gives: at most 200 bytes plus 1.25 times the
// record's name (allocator size classes round up).
func TestKeyRecordMemory(t *testing.T) {
	r := testredis.Start(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	c := r.Client(t)
	for _, n := range []struct{ topic, key int }{{10, 36}, {100, 128}, {256, 128}} {
		topic := (uniqueTopic("mem") + strings.Repeat("t", n.topic))[:n.topic]
		key := strings.Repeat("k", n.key)
		if _, err := b.Publish(t.Context(), topic, broker.Message{Data: "x", Key: key}); err != nil {
			t.Fatal(err)
		}
		used, err := c.MemoryUsage(t.Context(), "herald:{"+topic+"}:k:"+key, 0).Result()
		if err != nil {
			t.Fatal(err)
		}
		name := "herald:{" + topic + "}:k:" + key
		bound := int64(200 + len(name)*5/4)
		t.Logf("topic %d bytes, key %d bytes: MEMORY USAGE %d bytes (bound %d)", n.topic, n.key, used, bound)
		if used > bound {
			t.Errorf("a key record takes %d bytes, documented bound %d", used, bound)
		}
	}
}
