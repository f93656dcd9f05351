package sse

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
)

// redisPos orders redisbroker IDs of one epoch: <epoch>-<ms>-<seq>.
func redisPos(t testing.TB, id string) [2]uint64 {
	t.Helper()
	parts := strings.Split(id, "-")
	if len(parts) != 3 {
		t.Fatalf("not a redisbroker ID: %q", id)
	}
	ms, err1 := strconv.ParseUint(parts[1], 10, 64)
	seq, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("not a redisbroker ID: %q", id)
	}
	return [2]uint64{ms, seq}
}

// e2eLog records successful publishes: per topic the IDs, and the ID of
// every payload (payloads are unique).
type e2eLog struct {
	mu     sync.Mutex
	ids    map[string][]string
	byData map[string]string
}

func (l *e2eLog) add(topic, data, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids[topic] = append(l.ids[topic], id)
	l.byData[data] = id
}

// ordered returns topic's IDs in log order.
func (l *e2eLog) ordered(t testing.TB, topic string) []string {
	l.mu.Lock()
	ids := slices.Clone(l.ids[topic])
	l.mu.Unlock()
	slices.SortFunc(ids, func(a, b string) int {
		pa, pb := redisPos(t, a), redisPos(t, b)
		if pa[0] != pb[0] {
			return cmpU(pa[0], pb[0])
		}
		return cmpU(pa[1], pb[1])
	})
	return ids
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var errEnough = errors.New("enough of this connection")

// A client that is cut again and again, and reconnects with its
// Last-Event-ID to the other replica each time, while publishers run on
// both replicas and the replicas' pub/sub connections are killed, sees
// every topic's events exactly once, in log order — the IDs Publish
// returned on a one-topic stream.
func TestReconnectAcrossReplicas(t *testing.T) {
	r := testredis.Start(t)
	var brokers []*redisbroker.Broker
	var urls []string
	for range 2 {
		b, err := redisbroker.New(t.Context(), redisbroker.Config{
			URL:         r.URL() + "?dial_timeout=1s&read_timeout=1s&write_timeout=1s",
			HistorySize: 100000,
			Logger:      discardLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		h := &TopicHandler{Broker: b, Heartbeat: -1, Logger: discardLogger(), Hijack: true}
		srv := httptest.NewServer(h)
		t.Cleanup(func() {
			// Streams end with their clients; then the server and broker go.
			deadline := time.Now().Add(10 * time.Second)
			for h.Connections() > 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			srv.Close()
			b.Close()
		})
		brokers, urls = append(brokers, b), append(urls, srv.URL)
	}
	plain := r.Client(t)

	for _, tc := range []struct {
		name   string
		topics int
	}{
		{"one topic", 1},
		{"three topics", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := fmt.Sprintf("%x", rand.Uint64())
			var topics []string
			q := make([]string, tc.topics)
			for i := range tc.topics {
				topics = append(topics, fmt.Sprintf("rt-%s-%d", tag, i))
				q[i] = "topic=" + topics[i]
			}
			query := "/events?" + strings.Join(q, "&")
			log := &e2eLog{ids: map[string][]string{}, byData: map[string]string{}}

			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			c := &Client{HTTPClient: &http.Client{Transport: tr}, MaxRetries: -1}
			var mu sync.Mutex
			seen := map[string][]string{} // topic -> publish IDs, in arrival order
			var problems []string
			conns := 0
			record := func(ev Event) {
				mu.Lock()
				defer mu.Unlock()
				if ev.Type == ResetEventType {
					problems = append(problems, "reset: "+ev.Data)
					return
				}
				topic, _, _ := strings.Cut(ev.Data, "|")
				log.mu.Lock()
				id, ok := log.byData[ev.Data]
				log.mu.Unlock()
				if !ok {
					problems = append(problems, "unknown event "+ev.Data)
					return
				}
				if tc.topics == 1 && ev.ID != id {
					problems = append(problems, fmt.Sprintf("event %s has id %q, Publish returned %q", ev.Data, ev.ID, id))
				}
				seen[topic] = append(seen[topic], id)
			}
			published, done := make(chan struct{}), make(chan struct{})
			complete := func() bool {
				select {
				case <-published:
				default:
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				log.mu.Lock()
				defer log.mu.Unlock()
				for _, topic := range topics {
					if len(seen[topic]) < len(log.ids[topic]) {
						return false
					}
				}
				return true
			}
			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()
			var wg sync.WaitGroup
			wg.Go(func() {
				defer close(done)
				for i := 0; ctx.Err() == nil && !complete(); i++ {
					cctx, ccancel := context.WithTimeout(ctx, time.Duration(5+rand.N(60))*time.Millisecond)
					limit, n := 1+rand.N(40), 0
					err := c.Subscribe(cctx, urls[i%2]+query, func(ev Event) error {
						// Events are recorded before the publisher has
						// recorded its ID at times: wait for it.
						for {
							log.mu.Lock()
							_, ok := log.byData[ev.Data]
							log.mu.Unlock()
							if ok || ev.Type == ResetEventType || ctx.Err() != nil {
								break
							}
							time.Sleep(time.Millisecond)
						}
						record(ev)
						if n++; n >= limit {
							return errEnough
						}
						return nil
					})
					ccancel()
					mu.Lock()
					conns++
					mu.Unlock()
					var se *StatusError
					if errors.As(err, &se) {
						mu.Lock()
						problems = append(problems, se.Error())
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
					}
				}
			})
			// Publish once the client holds a starting position.
			deadline := time.Now().Add(20 * time.Second)
			for c.LastID() == "" {
				if time.Now().After(deadline) {
					t.Fatal("the client never received a starting position")
				}
				time.Sleep(time.Millisecond)
			}
			var pubs sync.WaitGroup
			for k := range 2 {
				pubs.Go(func() {
					for i := range 150 {
						topic := topics[(k+i)%len(topics)]
						data := fmt.Sprintf("%s|%d|%d", topic, k, i)
						id, err := brokers[(k+i)%2].Publish(ctx, topic, broker.Message{Type: "rt", Data: data})
						if err != nil {
							t.Errorf("Publish: %v", err)
							return
						}
						log.add(topic, data, id)
						if i%50 == 25 && k == 0 {
							plain.ClientKillByFilter(ctx, "TYPE", "pubsub")
						}
						time.Sleep(time.Duration(rand.N(8)) * time.Millisecond)
					}
				})
			}
			pubs.Wait()
			close(published)
			select {
			case <-done:
			case <-time.After(10 * time.Second): // the client misses events
			}
			cancel()
			wg.Wait()

			mu.Lock()
			defer mu.Unlock()
			t.Logf("%d connections", conns)
			for _, p := range problems[:min(len(problems), 5)] {
				t.Errorf("%s", p)
			}
			for _, topic := range topics {
				want := log.ordered(t, topic)
				got := seen[topic]
				if !slices.Equal(got, want) {
					n := 0
					for n < min(len(got), len(want)) && got[n] == want[n] {
						n++
					}
					t.Errorf("topic %s: saw %d events, published %d; first difference at %d: got %q, want %q",
						topic, len(got), len(want), n, got[n:min(n+3, len(got))], want[n:min(n+3, len(want))])
				}
			}
		})
	}
}
