package redisbroker

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
)

// TestWaitReplicas: with WaitReplicas a publish is acknowledged once WAIT
// confirmed it on that many replicas; without enough replicas it fails
// with ErrUnavailable and ErrNotReplicated, saying that the event may or
// may not have been kept (it was appended on the primary), and a retry
// with the same idempotency key appends nothing more. Batches are
// confirmed by one WAIT after their FCALLs.
func TestWaitReplicas(t *testing.T) {
	tp := testredis.StartSentinel(t, 1, 1)
	primary := tp.Nodes[0]
	url := "redis://" + primary.Addr
	topic := uniqueTopic("wait")

	ok, err := New(t.Context(), Config{URL: url, WaitReplicas: 1, WaitTimeout: 2 * time.Second, Logger: warnLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	id, err := ok.Publish(t.Context(), topic, broker.Message{Data: "one replica"})
	if err != nil {
		t.Fatalf("publish with one replica: %v", err)
	}
	res := ok.PublishBatch(t.Context(), []broker.Publication{{Topic: topic, Message: broker.Message{Data: "b1"}}, {Topic: topic, Message: broker.Message{Data: "b2"}}})
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("batch with one replica: %v", r.Err)
		}
	}

	short, err := New(t.Context(), Config{URL: url, WaitReplicas: 2, WaitTimeout: 200 * time.Millisecond, Logger: warnLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	start := time.Now()
	_, err = short.Publish(t.Context(), topic, broker.Message{Data: "two wanted", Key: "k1"})
	took := time.Since(start)
	if !errors.Is(err, broker.ErrUnavailable) || !errors.Is(err, ErrNotReplicated) || !strings.Contains(err.Error(), "may or may not") || !strings.Contains(err.Error(), "idempotency key") {
		t.Fatalf("publish short of replicas: %v; want ErrUnavailable and ErrNotReplicated saying the event may or may not have been kept", err)
	}
	t.Logf("publish short of replicas, after %v: %v", took.Round(time.Millisecond), err)
	_, err = short.Publish(t.Context(), topic, broker.Message{Data: "two wanted", Key: "k1"})
	if !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("retry: %v", err)
	}
	log := logIDs(t, primary.Client(t), DefaultPrefix, topic)
	if len(log) != 4 || log[0] != id {
		t.Fatalf("log %v: want the 3 confirmed events and the unconfirmed one once", log)
	}
	if slices.Contains(log[:3], "") {
		t.Fatal("empty ID")
	}
}
