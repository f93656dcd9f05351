package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/herald-sse/herald/internal/faultproxy"
	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
)

// TestKeySlot: the broker routes a topic to the primary of the slot Redis
// computes for its keys and channel (CLUSTER KEYSLOT), hash tags included.
func TestKeySlot(t *testing.T) {
	c := testredis.StartCluster(t, 1, 0)
	nc := c.Nodes()[0].Client(t)
	keys := []string{"", "a", "herald:{t}", "herald:{t}:s", "x{}y", "{}", "a{b}c{d}", "{{x}}", "}{", "p:{a}b}"}
	for range 200 {
		b := make([]byte, rand.IntN(20))
		for i := range b {
			b[i] = "ab{}:-x"[rand.IntN(7)]
		}
		keys = append(keys, string(b))
	}
	for _, k := range keys {
		want, err := nc.ClusterKeySlot(t.Context(), k).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
		}
		if got := keySlot(k); int64(got) != want {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", k, got, want)
		}
	}
}

// TestClusterLostReplyNotRetried: in Redis Cluster, a publish whose reply
// is lost after the primary ran it fails with ErrUnavailable and is not
// sent again — go-redis's ClusterClient resends a command or a pipeline
// after an EOF whatever MaxRetries says, which would append the event
// twice, under two IDs.
func TestClusterLostReplyNotRetried(t *testing.T) {
	c := testredis.StartCluster(t, 3, 0)
	topic := uniqueTopic("clusterlost")
	key := "herald:{" + topic + "}:s"
	primary := c.PrimaryForSlot(t.Context(), testredis.Slot(key))
	p := faultproxy.NewReplyDropper(t, primary.Addr)
	b := newBroker(t, nil, Config{
		URL: c.URL() + "&dial_timeout=1s&read_timeout=1s&write_timeout=1s", Cluster: true, Logger: warnLogger(),
		wrapDial: func(dial dialFunc) dialFunc {
			return func(ctx context.Context, network, addr string) (net.Conn, error) {
				if addr == primary.Addr {
					addr = p.Addr() // the primary of the topic, through the proxy
				}
				return dial(ctx, network, addr)
			}
		},
	})
	for i, batch := range []int{1, 3} {
		if _, err := b.Publish(t.Context(), topic, broker.Message{Data: "warm-up"}); err != nil {
			t.Fatalf("warm-up Publish: %v", err)
		}
		p.Arm()
		var err error
		if batch == 1 {
			_, err = b.Publish(t.Context(), topic, broker.Message{Data: "reply lost"})
		} else {
			pubs := make([]broker.Publication, batch)
			for k := range pubs {
				pubs[k] = broker.Publication{Topic: topic, Message: broker.Message{Data: fmt.Sprintf("batch %d", k)}}
			}
			for _, r := range b.PublishBatch(t.Context(), pubs) {
				if r.Err == nil {
					t.Errorf("a batch publish whose reply was lost returned %q and no error", r.ID)
				}
				err = errors.Join(err, r.Err)
			}
		}
		if got := p.Dropped(); got != int64(i+1) {
			t.Fatalf("the proxy dropped %d replies, want %d", got, i+1)
		}
		if err == nil || !errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("publish of %d whose reply was lost: %v, want an error wrapping broker.ErrUnavailable", batch, err)
		}
	}
	n, err := primary.Client(t).XLen(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", key, err)
	}
	if want := int64(2 + 1 + 3); n != want {
		t.Errorf("stream %s has %d entries, want %d (2 warm-ups, the lost single, the lost batch of 3): a publish whose reply was lost was sent again", key, n, want)
	}
}
