package redisbroker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

// TestFailoverLossReset: a failover to a replica that lacked the last
// acknowledged events is played on one real Redis — the topic's stream is
// cut back to what the "replica" had, and the pub/sub connection is
// killed, as a failover kills or abandons it. A live subscriber that
// received the lost events gets a failover reset, then the retained
// history and what follows, instead of continuing silently: when the
// stream ends before its last event, when the stream has newer entries
// but not its last event, and when events of the new primary reached it
// after the lost ones (the demoted primary relaying them).
func TestFailoverLossReset(t *testing.T) {
	r := testredis.Start(t)
	admin := r.Client(t)
	for _, tc := range []string{"stream ends before", "newer entries without it", "relayed after the loss"} {
		t.Run(tc, func(t *testing.T) {
			b := newBroker(t, r, Config{Logger: warnLogger()})
			// Sentinel's and Cluster's check, on a standalone Redis. Set
			// before the first subscription: only a topic's deliveries
			// and load rounds read it.
			b.recentCap = 64
			topic := uniqueTopic("loss")
			live := subscribe(t, b, []string{topic}, nil)
			position(t, live, topic)
			var ids []string
			for i := range 4 {
				id, err := b.Publish(t.Context(), topic, broker.Message{Type: "ev", Data: string(rune('a' + i))})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			waitLast(t, live, topic, ids[3])

			// The "promoted replica" had the first two only.
			key := DefaultPrefix + ":{" + topic + "}:s"
			keep, err := admin.XRangeN(t.Context(), key, "-", "+", 2).Result()
			if err != nil {
				t.Fatal(err)
			}
			_, err = admin.TxPipelined(t.Context(), func(p redis.Pipeliner) error {
				p.Del(t.Context(), key)
				for _, m := range keep {
					p.XAdd(t.Context(), &redis.XAddArgs{Stream: key, ID: m.ID, Values: []any{"t", m.Values["t"], "d", m.Values["d"]}})
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			switch tc {
			case "newer entries without it":
				// Written on the new primary while the subscriber's
				// connection was on the old one: never seen live.
				if err := admin.XAdd(t.Context(), &redis.XAddArgs{Stream: key, Values: []any{"t", "ev", "d", "new"}}).Err(); err != nil {
					t.Fatal(err)
				}
			case "relayed after the loss":
				// In a later millisecond than the lost events, so that its
				// ID is past them (one in the same millisecond would take
				// a lost event's ID, and live delivery skips it as already
				// delivered until the refill resets).
				_, last, _ := parseID(ids[3])
				for uint64(time.Now().UnixMilli()) <= last.ms {
					time.Sleep(time.Millisecond)
				}
				id, err := b.Publish(t.Context(), topic, broker.Message{Type: "ev", Data: "relayed"})
				if err != nil {
					t.Fatal(err)
				}
				waitLast(t, live, topic, id)
			}
			killPubSub(t, admin)
			after, err := b.Publish(t.Context(), topic, broker.Message{Type: "ev", Data: "after"})
			if err != nil {
				t.Fatal(err)
			}
			log := logIDs(t, admin, DefaultPrefix, topic)
			if !live.Until(waitTimeout, func(r *brokertest.Reader) bool {
				return r.LastID(topic) == after && hasReset(r, topic, broker.ReasonFailover)
			}) {
				t.Fatalf("no failover reset, or not up to %s: %s", after, itemsOf(live, topic))
			}
			// After the reset: a position, then the whole log as it is now.
			items := live.Items[topic]
			k := slices.IndexFunc(items, func(e *broker.Event) bool { return e.Kind == broker.KindReset })
			if k+1 >= len(items) || items[k+1].Kind != broker.KindPosition {
				t.Fatalf("no position after the reset: %s", itemsOf(live, topic))
			}
			var got []string
			for _, e := range items[k+2:] {
				got = append(got, e.ID)
			}
			if !slices.Equal(got, log) {
				t.Fatalf("after the reset %v, want the log %v", got, log)
			}
		})
	}
}

// killPubSub closes every pub/sub client connection of the server.
func killPubSub(t *testing.T, c *redis.Client) {
	t.Helper()
	if err := c.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
	}
}

func hasReset(r *brokertest.Reader, topic string, reason broker.ResetReason) bool {
	return slices.ContainsFunc(r.Items[topic], func(e *broker.Event) bool { return e.Kind == broker.KindReset && e.Reason == reason })
}

func itemsOf(r *brokertest.Reader, topic string) []string {
	var s []string
	for _, e := range r.Items[topic] {
		switch e.Kind {
		case broker.KindReset:
			s = append(s, "reset:"+string(e.Reason))
		case broker.KindPosition:
			s = append(s, "pos:"+e.ID)
		default:
			s = append(s, e.ID)
		}
	}
	return s
}
