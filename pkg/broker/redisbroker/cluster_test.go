package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

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

// TestClusterWaitReplicas: with WaitReplicas, each publish is confirmed by
// a WAIT on the connection of the primary it went to. A batch over every
// shard, with one shard's replica paused, fails exactly that shard's
// events with ErrNotReplicated (a WAIT anywhere else would count the
// replicas of a connection that wrote nothing, and pass); the others are
// acknowledged. A retry with the same key once the replica is back returns
// the first ID.
func TestClusterWaitReplicas(t *testing.T) {
	c := testredis.StartCluster(t, 3, 1)
	// WAIT's timeout is the time a paused replica costs each publish to its
	// shard; an up replica on a loaded machine must confirm well within it
	// (300 ms was not always enough in CI).
	b := newBroker(t, nil, Config{URL: c.URL(), Cluster: true, WaitReplicas: 1, WaitTimeout: 2 * time.Second, Logger: warnLogger()})
	nodes := c.Nodes()
	topics := make([]string, 3) // topics[i] on primary i
	for found := 0; found < 3; {
		topic := uniqueTopic("wait")
		p := c.PrimaryForSlot(t.Context(), testredis.Slot("herald:{"+topic+"}"))
		for i := range topics {
			if topics[i] == "" && p == nodes[i] {
				topics[i] = topic
				found++
			}
		}
	}
	batch := func(round string) []broker.PublishResult {
		pubs := make([]broker.Publication, len(topics))
		for i, topic := range topics {
			pubs[i] = broker.Publication{Topic: topic, Message: broker.Message{Data: round, Key: round}}
		}
		return b.PublishBatch(t.Context(), pubs)
	}
	// With every replica up: a replica still catching up with its primary
	// (the cluster was just formed) may miss one WAIT; the retry with the
	// same keys cannot append twice (checked at the end).
	for deadline := time.Now().Add(waitTimeout); ; {
		var failed []string
		for i, r := range batch("all-up") {
			if r.Err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", topics[i], r.Err))
			}
		}
		if len(failed) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish with every replica up: %q", failed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	replica := nodes[3] // the replica of primary 0
	replica.Pause(t)
	res := batch("one-paused")
	replica.Unpause(t)
	for i, r := range res {
		switch {
		case i == 0 && !errors.Is(r.Err, ErrNotReplicated):
			t.Errorf("publish to %s, whose primary's replica is paused: %v, want ErrNotReplicated", topics[i], r.Err)
		case i > 0 && r.Err != nil:
			t.Errorf("publish to %s on another shard: %v", topics[i], r.Err)
		}
	}
	// The event is in the primary's log: the retry with its key finds it.
	var id string
	for deadline := time.Now().Add(waitTimeout); ; {
		pubs := []broker.Publication{{Topic: topics[0], Message: broker.Message{Data: "one-paused", Key: "one-paused"}}}
		r := b.PublishBatch(t.Context(), pubs)[0]
		if r.Err == nil {
			id = r.ID
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry after the replica's return: %v", r.Err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, err := nodes[0].Client(t).XLen(t.Context(), "herald:{"+topics[0]+"}:s").Result()
	if err != nil || n != 2 {
		t.Errorf("stream of %s: %d entries (%v), want 2: the retry with the key appended again (id %s)", topics[0], n, err, id)
	}
}
