package redisbroker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/redis/go-redis/v9"
)

// sentinelBroker returns a broker on tp's Sentinel URL, closed at cleanup,
// and the reasons its pub/sub connection was replaced.
func sentinelBroker(t *testing.T, tp *testredis.Topology, cfg Config) (*Broker, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var reasons []string
	cfg.URL = tp.URL()
	if cfg.Logger == nil {
		cfg.Logger = warnLogger()
	}
	cfg.OnReconnect = func(r string) {
		mu.Lock()
		reasons = append(reasons, r)
		mu.Unlock()
	}
	b, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(reasons)
	}
}

// publishUntilOK publishes data until a publish succeeds (each attempt
// bounded by a second) and returns the ID and the failed attempts.
func publishUntilOK(t *testing.T, b *Broker, topic, data string) (string, []error) {
	t.Helper()
	var errs []error
	deadline := time.Now().Add(waitTimeout)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		start := time.Now()
		id, err := b.Publish(ctx, topic, broker.Message{Data: data})
		cancel()
		if err == nil {
			return id, errs
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("a publish during the failover took %v (%v): publishes must fail fast", took, err)
		}
		errs = append(errs, err)
		if time.Now().After(deadline) {
			t.Fatalf("no publish succeeded within %v: %v", waitTimeout, errs[len(errs)-1])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nodeOf returns the address the broker's pub/sub connection is on.
func nodeOf(b *Broker) string {
	if p := b.conn().node.Load(); p != nil {
		return *p
	}
	return ""
}

// TestSentinelManualFailover: SENTINEL FAILOVER demotes the primary and
// leaves it reachable; Sentinel's reconfiguration kills its normal
// clients, not its pub/sub clients. The broker sees the role change, moves
// its pub/sub connection to the new primary, refills the topic, and live
// events flow again; every publish that failed meanwhile failed with
// ErrUnavailable.
func TestSentinelManualFailover(t *testing.T) {
	tp := testredis.StartSentinel(t, 2, 3)
	b, reasons := sentinelBroker(t, tp, Config{})
	topic := uniqueTopic("manual")
	first, _ := publishUntilOK(t, b, topic, "before")
	r := subscribe(t, b, []string{topic}, broker.Cursor{topic: first})
	second, _ := publishUntilOK(t, b, topic, "live")
	waitLast(t, r, topic, second)
	old := tp.WaitPrimary(t, nil, waitTimeout)
	if got := nodeOf(b); got != old.Addr {
		t.Fatalf("pub/sub connection on %q, want the primary %s", got, old.Addr)
	}

	// Replication is asynchronous: under load the replicas may not have
	// the topic yet, and a failover then loses it whole (an epoch reset,
	// which is honest but not what this test is about). A write on one
	// connection followed by WAIT there means the replicas have every
	// write before it.
	oc := old.Client(t).Conn() // one connection: WAIT counts its writes
	defer oc.Close()
	if err := oc.Set(t.Context(), uniqueTopic("sync"), "x", time.Minute).Err(); err != nil {
		t.Fatalf("SET on the primary: %v", err)
	}
	if n, err := oc.Do(t.Context(), "WAIT", 2, 10000).Int(); err != nil || n < 2 {
		t.Fatalf("WAIT 2: %d replicas, %v", n, err)
	}

	sc := redis.NewSentinelClient(&redis.Options{Addr: tp.Sentinels[0].Addr})
	defer sc.Close()
	start := time.Now()
	if err := sc.Failover(t.Context(), testredis.MasterName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	next := tp.WaitPrimary(t, old, waitTimeout)
	t.Logf("%s promoted after %v", next.Name, time.Since(start).Round(time.Millisecond))
	poll(t, "the pub/sub connection on the new primary", func() bool { return nodeOf(b) == next.Addr })
	t.Logf("pub/sub connection on the new primary after %v; reconnect reasons %v", time.Since(start).Round(time.Millisecond), reasons())
	third, errs := publishUntilOK(t, b, topic, "after")
	for _, err := range errs {
		if !isUnavailable(err) {
			t.Errorf("a publish during the failover failed with %v, want ErrUnavailable", err)
		}
	}
	waitLast(t, r, topic, third)
	t.Logf("live delivery on the new primary after %v", time.Since(start).Round(time.Millisecond))
	if !slices.Contains(reasons(), ReconnectDemoted) {
		t.Errorf("reconnect reasons %v, want %q: Sentinel leaves a demoted primary's pub/sub clients connected", reasons(), ReconnectDemoted)
	}
	checkHonest(t, r, topic, logIDs(t, next.Client(t), DefaultPrefix, topic))
}

// checkHonest checks a subscriber's items of topic against the topic's log
// as the current primary has it: every segment (a position, then events)
// is exactly the log after its position; a segment may instead hold events
// the log lost (a failover) if a failover reset ends it.
func checkHonest(t *testing.T, r *brokertest.Reader, topic string, log []string) {
	t.Helper()
	items := r.Items[topic]
	after := func(pos string) []string {
		_, p, ok := parseID(pos)
		if !ok {
			t.Fatalf("unparsable position %q", pos)
		}
		i := slices.IndexFunc(log, func(id string) bool { _, s, _ := parseID(id); return p.less(s) })
		if i < 0 {
			return nil
		}
		return log[i:]
	}
	for k := 0; k < len(items); {
		if items[k].Kind == broker.KindReset {
			k++
			continue
		}
		if items[k].Kind != broker.KindPosition {
			t.Fatalf("segment at %d starts with %v, not a position: %v", k, items[k], itemsOf(r, topic))
		}
		want := after(items[k].ID)
		k++
		var got []string
		for k < len(items) && items[k].Kind == broker.KindEvent {
			got = append(got, items[k].ID)
			k++
		}
		endsInFailover := k < len(items) && items[k].Kind == broker.KindReset && items[k].Reason == broker.ReasonFailover
		switch {
		case k < len(items) && !endsInFailover:
			t.Errorf("reset %q: only failover resets are expected here: %v", items[k].Reason, itemsOf(r, topic))
		case endsInFailover:
			// The events up to the first the log lost are the log's.
			n := slices.IndexFunc(got, func(id string) bool { return !slices.Contains(log, id) })
			if n < 0 {
				t.Logf("a failover reset after events the log still has (a lost position, or a bare position ahead of the log): %v", got)
				n = len(got)
			}
			if !slices.Equal(got[:n], want[:min(n, len(want))]) {
				t.Errorf("before the failover reset: %v, want the log's %v", got[:n], want[:min(n, len(want))])
			}
		default:
			if !slices.Equal(got, want) {
				t.Errorf("last segment: %v\nwant the log after its position: %v", got, want)
			}
		}
	}
}

// TestSentinelKill: the primary is killed (SIGKILL, no RST); the sentinels
// promote a replica, the broker's publishes fail fast with ErrUnavailable
// until then, its pub/sub connection moves to the new primary and the
// subscriber gets every event of the new primary's log, in order, once.
func TestSentinelKill(t *testing.T) {
	tp := testredis.StartSentinel(t, 2, 3)
	b, reasons := sentinelBroker(t, tp, Config{})
	topic := uniqueTopic("kill")
	first, _ := publishUntilOK(t, b, topic, "before")
	r := subscribe(t, b, []string{topic}, broker.Cursor{topic: first})
	old := tp.WaitPrimary(t, nil, waitTimeout)
	// The replicas have the events before the kill (no loss to explain).
	if err := old.Client(t).Do(t.Context(), "WAIT", 2, 2000).Err(); err != nil {
		t.Fatalf("WAIT: %v", err)
	}
	start := time.Now()
	old.Kill(t)
	id, errs := publishUntilOK(t, b, topic, "after")
	t.Logf("publishing works again after %v (%d failed attempts)", time.Since(start).Round(time.Millisecond), len(errs))
	for _, err := range errs {
		if !isUnavailable(err) {
			t.Errorf("a publish during the failover failed with %v, want ErrUnavailable", err)
		}
	}
	waitLast(t, r, topic, id)
	t.Logf("live delivery after %v; reconnect reasons %v", time.Since(start).Round(time.Millisecond), reasons())
	next := tp.WaitPrimary(t, old, waitTimeout)
	checkHonest(t, r, topic, logIDs(t, next.Client(t), DefaultPrefix, topic))
}

func isUnavailable(err error) bool { return errors.Is(err, broker.ErrUnavailable) }
