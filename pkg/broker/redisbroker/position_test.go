package redisbroker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

// Topics created within one microsecond (the epoch is the server time in
// microseconds) must not share an epoch: a position of one would pass for
// the other's, and a resume would skip events silently. (Issue 9, item 1.)
// Two topics created in the same microsecond are made here by giving the
// second the first one's epoch key, the state such a creation leaves.
func TestForeignPositionSameMicrosecond(t *testing.T) {
	r := testredis.Start(t)
	b := newBroker(t, r, Config{})
	c := r.Client(t)
	ctx := context.Background()
	a, other := uniqueTopic("same-us-a"), uniqueTopic("same-us-c")
	for _, tp := range []string{other, a} {
		if err := c.Del(ctx, DefaultPrefix+":{"+tp+"}:s", DefaultPrefix+":{"+tp+"}:e").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.FCall(ctx, "herald_publish", []string{a}, "", "a0").Err(); err != nil {
		t.Fatal(err)
	}
	epochA, err := c.Get(ctx, DefaultPrefix+":{"+a+"}:e").Result()
	if err != nil {
		t.Fatal(err)
	}
	// What the function does for a new topic, within the same microsecond:
	// the same time, the topic's own tag.
	epochC := epochA
	if base, _, ok := strings.Cut(epochA, "_"); ok {
		epochC = base + "_" + topicTag(other)
	}
	if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAdd(ctx, &redis.XAddArgs{Stream: DefaultPrefix + ":{" + other + "}:s", Values: []string{"t", "", "d", "c0"}})
		p.Set(ctx, DefaultPrefix+":{"+other+"}:e", epochC, 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var aIDs []string
	for range 6 {
		id, err := b.Publish(ctx, a, broker.Message{Data: "a"})
		if err != nil {
			t.Fatal(err)
		}
		aIDs = append(aIDs, id)
	}
	for range 4 {
		if _, err := b.Publish(ctx, other, broker.Message{Data: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	all := logIDs(t, c, DefaultPrefix, other)
	// a's early position lies inside c's log (stream IDs are time-based).
	rd := subscribe(t, b, []string{other}, broker.Cursor{other: aIDs[0]})
	if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.Count(other) >= len(all) }) {
		t.Fatalf("waiting for c's whole log after a reset: %s", rd)
	}
	brokertest.CheckSequence(t, other, rd.Items[other], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}, IDs: all})
}

// Topic churn leaves nothing behind (issue 9, item 8): with a history TTL
// every publish sets the topic's keys to expire after it; without one, the
// keys a subscription created for a topic without events expire after a
// day unless a publish comes, and published topics keep theirs.
func TestIdleTopicKeysExpire(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	ctx := context.Background()
	keys := func(prefix, topic string) []string {
		return []string{prefix + ":{" + topic + "}:s", prefix + ":{" + topic + "}:e"}
	}
	pttl := func(key string) time.Duration {
		d, err := c.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	withTTL := newBroker(t, r, Config{Prefix: "ttl", HistoryTTL: 3 * time.Second})
	topic := uniqueTopic("churn")
	if _, err := withTTL.Publish(ctx, topic, broker.Message{Data: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys("ttl", topic) {
		if d := pttl(k); d <= 0 || d > 3*time.Second {
			t.Errorf("%s: PTTL %v after a publish, want (0, 3s]", k, d)
		}
	}
	// Once expired, an old cursor gets an epoch reset, not a silent gap.
	old, _ := withTTL.Publish(ctx, topic, broker.Message{Data: "y"})
	deadline := time.Now().Add(waitTimeout)
	for c.Exists(ctx, keys("ttl", topic)...).Val() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the keys did not expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fresh, _ := withTTL.Publish(ctx, topic, broker.Message{Data: "z"})
	rd := subscribe(t, withTTL, []string{topic}, broker.Cursor{topic: old})
	waitLast(t, rd, topic, fresh)
	brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Reset: []broker.ResetReason{broker.ReasonEpoch}, IDs: []string{fresh}})

	plain := newBroker(t, r, Config{})
	idle, used := uniqueTopic("idle"), uniqueTopic("used")
	rs := subscribe(t, plain, []string{idle, used}, nil)
	position(t, rs, idle)
	position(t, rs, used)
	for _, k := range keys(DefaultPrefix, idle) {
		if d := pttl(k); d <= 0 || d > touchTTL {
			t.Errorf("%s: PTTL %v for a topic only subscribed to, want (0, %v]", k, d, touchTTL)
		}
	}
	if _, err := plain.Publish(ctx, used, broker.Message{Data: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(DefaultPrefix, used) {
		if d := pttl(k); d != -1 {
			t.Errorf("%s: PTTL %v for a published topic without a history TTL, want none (-1)", k, d)
		}
	}
}

// A subscription that starts while Redis does not answer starts at a
// time-based position. That position, handed to another replica when
// nothing was published since, must resume exactly: no reset.
func TestTimeBasedPositionResumes(t *testing.T) {
	r := testredis.Start(t)
	a := newBroker(t, r, Config{Logger: warnLogger()})
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("timebased")
	publishN(t, a, topic, 3)
	// Older than the clock-skew tolerance: the time-based start excludes
	// them, so nothing in the stream is stamped after the start.
	time.Sleep(clockSkew + 100*time.Millisecond)

	r.Pause(t)
	ra := subscribe(t, a, []string{topic}, nil) // the head read times out
	r.Unpause(t)
	pos := position(t, ra, topic)

	rb := subscribe(t, b, []string{topic}, broker.Cursor{topic: pos})
	position(t, rb, topic)
	id := publishRetry(t, a, topic, broker.Message{Data: "after"})
	waitLast(t, ra, topic, id)
	waitLast(t, rb, topic, id)
	brokertest.CheckSequence(t, topic, ra.Items[topic], brokertest.Want{Position: pos, IDs: []string{id}})
	brokertest.CheckSequence(t, topic, rb.Items[topic], brokertest.Want{Position: pos, IDs: []string{id}})
}
