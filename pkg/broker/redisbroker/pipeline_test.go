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
	"github.com/redis/go-redis/v9"
)

// gateHook holds the first hold publish FCALLs until released and records
// the size of every round trip that carries publishes.
type gateHook struct {
	fn      string
	hold    int
	held    chan struct{} // closed when hold publishes are being held
	release chan struct{}
	holding int // guarded by mu
	// beforePipeline, if set, runs before a pipeline with publishes is
	// sent.
	beforePipeline func()
	mu             sync.Mutex
	trips          []int // commands per round trip with publishes
}

func newGateHook(fn string, hold int) *gateHook {
	return &gateHook{fn: fn, hold: hold, held: make(chan struct{}), release: make(chan struct{})}
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) isPublish(cmd redis.Cmder) bool {
	a := cmd.Args()
	return len(a) > 1 && cmd.Name() == "fcall" && a[1] == h.fn
}

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.isPublish(cmd) {
			h.mu.Lock()
			hold := h.holding < h.hold
			if hold {
				if h.holding++; h.holding == h.hold {
					close(h.held)
				}
			}
			h.mu.Unlock()
			if hold {
				<-h.release
			}
			h.mu.Lock()
			h.trips = append(h.trips, 1)
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			if h.isPublish(c) {
				n++
			}
		}
		if n > 0 {
			if h.beforePipeline != nil {
				h.beforePipeline()
			}
			h.mu.Lock()
			h.trips = append(h.trips, n)
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (h *gateHook) roundTrips() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.trips...)
}

func (b *Broker) queued() int {
	b.pipe.mu.Lock()
	defer b.pipe.mu.Unlock()
	return len(b.pipe.queue)
}

// TestPublishesSharePipeline: publishes that arrive while the pipelines in
// flight are at the limit go out together as one pipeline, in arrival
// order, and each gets its own answer; a queued publish whose ctx ends is
// withdrawn (nothing is appended) without stalling the others, even the
// first in the queue.
func TestPublishesSharePipeline(t *testing.T) {
	for _, limit := range []int{1, pipelinesInFlight} {
		t.Run(fmt.Sprint("in flight ", limit), func(t *testing.T) { testSharePipeline(t, limit) })
	}
}

func testSharePipeline(t *testing.T, limit int) {
	r := testredis.Start(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { c.Close() })
	prefix := "pipe"
	h := newGateHook(prefix+"_publish", limit)
	c.AddHook(h)
	b := newBroker(t, r, Config{Client: c, Prefix: prefix, Logger: warnLogger()})
	b.pipe.limit = limit
	topic := uniqueTopic("pipe")
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()

	type result struct {
		i   int
		id  string
		err error
	}
	results := make(chan result, 16)
	publish := func(ctx context.Context, i int) {
		id, err := b.Publish(ctx, topic, broker.Message{Data: fmt.Sprint(i)})
		results <- result{i, id, err}
	}
	for i := range limit { // the leaders, held in the hook
		go publish(ctx, -1-i)
	}
	<-h.held
	// Queued one by one, so their order is known. Number 1 is next to
	// lead and 4 is in the middle: both give up before the release.
	short, cancelShort := context.WithCancel(ctx)
	for i := 1; i <= 7; i++ {
		pctx := ctx
		if i == 1 || i == 4 {
			pctx = short
		}
		go publish(pctx, i)
		poll(t, fmt.Sprintf("publish %d queued", i), func() bool { return b.queued() == i })
	}
	cancelShort()
	for range 2 {
		res := <-results
		if res.i != 1 && res.i != 4 || !errors.Is(res.err, context.Canceled) {
			t.Fatalf("publish %d: %q, %v; want publishes 1 and 4 to end with their ctx", res.i, res.id, res.err)
		}
	}
	if n := b.queued(); n != 5 {
		t.Fatalf("%d publishes queued after two withdrew, want 5", n)
	}
	close(h.release)
	ids := map[int]string{}
	for range 5 + limit {
		res := <-results
		if res.err != nil {
			t.Fatalf("publish %d: %v", res.i, res.err)
		}
		ids[res.i] = res.id
	}
	// The leaders and the queued pipeline were concurrent once released
	// (with two in flight, the second leader may reach Redis after the
	// pipeline): the leaders anywhere, the queued ones in order.
	got := logIDs(t, r.Client(t), prefix, topic)
	want := []string{ids[2], ids[3], ids[5], ids[6], ids[7]}
	var queued []string
	for _, id := range got {
		if slices.Contains(want, id) {
			queued = append(queued, id)
		}
	}
	if len(got) != limit+5 || fmt.Sprint(queued) != fmt.Sprint(want) {
		t.Errorf("log %v, want %d leaders and %v (publishes 2, 3, 5, 6, 7 in order)", got, limit, want)
	}
	wantTrips := strings.Repeat("1 ", limit) + "5"
	trips := h.roundTrips()
	slices.Sort(trips)
	if fmt.Sprint(trips) != "["+wantTrips+"]" {
		t.Errorf("round trips carried %v publishes, want [%s] in some order: the five queued ones in one pipeline", trips, wantTrips)
	}

	// A lone publish afterwards goes at once, alone.
	if _, err := b.Publish(ctx, topic, broker.Message{Data: "lone"}); err != nil {
		t.Fatal(err)
	}
	if trips := h.roundTrips(); len(trips) != limit+2 || trips[limit+1] != 1 {
		t.Errorf("round trips %v, want the %d above then 1", trips, limit+1)
	}
}

// TestPipelineFailsEachPublish: a pipeline whose connection breaks fails
// every publish it carried with ErrUnavailable; the next publishes work.
func TestPipelineFailsEachPublish(t *testing.T) {
	r := testredis.Start(t)
	p := faultproxy.NewReplyDropper(t, r.Addr)
	prefix := "pipefail"
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true, ReadTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	h := newGateHook(prefix+"_publish", 1)
	h.beforePipeline = p.Arm // the pipeline's reply is lost
	c.AddHook(h)
	b := newBroker(t, r, Config{Client: c, Prefix: prefix, Logger: warnLogger()})
	b.pipe.limit = 1
	topic := uniqueTopic("pipefail")
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()

	errs := make(chan error, 8)
	go func() { _, err := b.Publish(ctx, topic, broker.Message{Data: "leader"}); errs <- err }()
	<-h.held
	for i := 1; i <= 4; i++ {
		go func() { _, err := b.Publish(ctx, topic, broker.Message{Data: fmt.Sprint(i)}); errs <- err }()
		poll(t, "queued", func() bool { return b.queued() == i })
	}
	close(h.release)
	if err := <-errs; err != nil {
		t.Fatalf("leader: %v", err)
	}
	for i := range 4 {
		if err := <-errs; !errors.Is(err, broker.ErrUnavailable) {
			t.Errorf("publish %d of the broken pipeline: %v, want ErrUnavailable", i, err)
		}
	}
	if trips := h.roundTrips(); fmt.Sprint(trips) != "[1 4]" {
		t.Errorf("round trips %v, want [1 4]", trips)
	}
	if _, err := b.Publish(ctx, topic, broker.Message{Data: "after"}); err != nil {
		t.Errorf("publish after the broken pipeline: %v", err)
	}
	if got := p.Dropped(); got != 1 {
		t.Errorf("the proxy dropped %d replies, want 1", got)
	}
}
