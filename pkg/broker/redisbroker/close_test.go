package redisbroker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"go.uber.org/goleak"
)

// Closing a broker while publishers, churning subscribers, replays and
// pub/sub kills run: every call returns, every subscription ends with
// ErrClosed, the other replica carries on, and no goroutine is left.
func TestCloseUnderLoad(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	ignore := goleak.IgnoreCurrent()
	cfg := Config{URL: r.URL() + "?dial_timeout=1s&read_timeout=1s&write_timeout=1s", HistorySize: 5000, QueueLimit: 1 << 20, Logger: warnLogger()}
	a, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	topics := []string{uniqueTopic("cl1"), uniqueTopic("cl2"), uniqueTopic("cl3")}
	for _, topic := range topics {
		publishN(t, p, topic, 200)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var subsMu sync.Mutex
	var subs []broker.Subscription
	for k := range 3 {
		wg.Go(func() { // publishers on both replicas
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				bk := []*Broker{a, p}[(k+i)%2]
				if _, err := bk.Publish(context.Background(), topics[(k+i)%3], broker.Message{Data: "x"}); err != nil && !errors.Is(err, broker.ErrClosed) {
					t.Errorf("Publish: %v", err)
					return
				}
			}
		})
		wg.Go(func() { // churning subscribers on a, some replaying
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				from := broker.Cursor{}
				if i%2 == 0 {
					from[topics[k]] = "0-0-0"
				}
				sub, err := a.Subscribe(context.Background(), topics[:1+(k+i)%3], from)
				if errors.Is(err, broker.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Subscribe: %v", err)
					return
				}
				if i%3 == 0 {
					subsMu.Lock()
					subs = append(subs, sub) // kept open until a closes
					subsMu.Unlock()
				} else {
					brokertest.NewReader(sub).Until(50*time.Millisecond, func(r *brokertest.Reader) bool { return r.Total() > 0 })
					sub.Close()
				}
			}
		})
	}
	for range 3 {
		time.Sleep(100 * time.Millisecond)
		c.ClientKillByFilter(t.Context(), "TYPE", "pubsub")
	}
	done := make(chan error)
	go func() { done <- a.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close under load did not return")
	}
	close(stop)
	wg.Wait()
	subsMu.Lock()
	for i, sub := range subs {
		rd := brokertest.NewReader(sub)
		if !rd.UntilEnd(waitTimeout) || !errors.Is(rd.Err, broker.ErrClosed) {
			t.Errorf("subscription %d after Close: %s", i, rd)
		}
	}
	subsMu.Unlock()
	// The other replica is unaffected.
	rd := subscribe(t, p, []string{topics[0]}, nil)
	position(t, rd, topics[0])
	id := publishRetry(t, p, topics[0], broker.Message{Data: "after"})
	waitLast(t, rd, topics[0], id)
	rd.Sub.Close()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	opts := append([]goleak.Option{ignore}, leakOptions...)
	deadline := time.Now().Add(waitTimeout)
	for {
		err := goleak.Find(opts...)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
