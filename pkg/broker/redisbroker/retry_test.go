package redisbroker

import (
	"context"
	"errors"
	"testing"

	"github.com/herald-sse/herald/internal/faultproxy"
	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
)

// A publish whose reply is lost after Redis ran the FCALL must fail, not be
// sent again: go-redis retries a command after an EOF or reset while
// reading its reply (3 times by default), and a second FCALL appends the
// event a second time, under a second ID, for every subscriber.
func TestPublishLostReplyNotRetried(t *testing.T) {
	r := testredis.Start(t)
	p := faultproxy.NewReplyDropper(t, r.Addr)
	prefix := "lostreply"
	b := newBroker(t, r, Config{
		URL:    "redis://" + p.Addr() + "/0?dial_timeout=1s&read_timeout=1s&write_timeout=1s",
		Prefix: prefix,
		Logger: warnLogger(),
	})
	topic := uniqueTopic("lostreply")

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if _, err := b.Publish(ctx, topic, broker.Message{Data: "warm-up"}); err != nil {
		t.Fatalf("warm-up Publish: %v", err)
	}

	p.Arm()
	id, err := b.Publish(ctx, topic, broker.Message{Data: "reply lost"})
	if got := p.Dropped(); got != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", got)
	}
	if err == nil {
		t.Errorf("Publish whose reply was lost returned %q and no error: it was sent again", id)
	} else if !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish whose reply was lost: %v, want an error wrapping broker.ErrUnavailable", err)
	} else {
		t.Logf("Publish whose reply was lost: %v", err)
	}

	// Read from Redis directly, not through the proxy.
	key := prefix + ":{" + topic + "}:s"
	n, err := r.Client(t).XLen(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", key, err)
	}
	if n != 2 {
		t.Errorf("stream %s has %d entries, want 2 (the warm-up and the event whose reply was lost): the lost-reply FCALL was retried", key, n)
	}
}
