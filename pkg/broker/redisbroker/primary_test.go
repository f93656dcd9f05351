package redisbroker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

// TestReadsFromPrimary: replays must not be sent as read-only commands,
// which a client routing reads to replicas (ReadOnly, RouteByLatency,
// RouteRandomly, ReplicaOnly) would answer from lagging history.
func TestReadsFromPrimary(t *testing.T) {
	r := testredis.Start(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	rec := &cmdRecorder{}
	c.AddHook(rec)
	b := newBroker(t, r, Config{Client: c, Logger: warnLogger()})
	topic := uniqueTopic("primary")
	var ids []string
	for i := range 3 {
		id, err := b.Publish(t.Context(), topic, broker.Message{Data: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	live := subscribe(t, b, []string{topic}, nil)
	position(t, live, topic)
	replay := subscribe(t, b, []string{topic}, broker.Cursor{topic: ids[0]})
	waitLast(t, replay, topic, ids[2])
	names := rec.names()
	if !slices.Contains(names, "fcall") {
		t.Errorf("no FCALL was sent: %v", names)
	}
	if slices.Contains(names, "fcall_ro") {
		t.Errorf("a read was sent as FCALL_RO, which replica-routing clients send to a replica: %v", names)
	}
}

// cmdRecorder is a go-redis hook that records the name of every command.
type cmdRecorder struct {
	mu  sync.Mutex
	cmd []string
}

func (h *cmdRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cmdRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.cmd = append(h.cmd, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *cmdRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		for _, c := range cmds {
			h.cmd = append(h.cmd, c.Name())
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (h *cmdRecorder) names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.cmd)
}

// TestReplicaRefused: a client that talks to a replica (ReplicaOnly, or
// simply a replica's address) is refused at New with a clear error.
func TestReplicaRefused(t *testing.T) {
	r := testredis.Start(t)
	admin := r.Client(t)
	if err := admin.Do(t.Context(), "REPLICAOF", "127.0.0.1", "1").Err(); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	b, err := New(t.Context(), Config{URL: r.URL(), Logger: warnLogger()})
	if err == nil {
		b.Close()
		t.Fatal("New on a replica succeeded")
	}
	if !strings.Contains(err.Error(), "READONLY") || !strings.Contains(err.Error(), "primary") {
		t.Errorf("New on a replica: %v, want READONLY and a hint that herald needs the primary", err)
	}
	t.Logf("New on a replica: %v", err)
}
