package server

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/faultproxy"
	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
)

// TestEndToEndRedis runs the server on the Redis broker: publish and
// subscribe work, herald_broker_up follows Redis, while Redis is down
// publishing answers 503 but /readyz stays 200 (readiness must not follow
// Redis, or every replica would leave the load balancer at once), and the
// open stream survives the outage.
func TestEndToEndRedis(t *testing.T) {
	r := testredis.Start(t)
	ls := startServer(t, func(c *Config) {
		c.RedisURL = r.URL() + "?dial_timeout=1s&read_timeout=1s&write_timeout=1s"
	})
	if ls.kind != "redis" {
		t.Fatalf("broker kind %q", ls.kind)
	}
	waitFor(t, 10*time.Second, "herald_broker_up 1", func() bool {
		return counterValue(t, ls.Metrics(), "herald_broker_up", "") == 1
	})
	st := ls.subscribe(t, "topic=news", "")
	before := float64(time.Now().UnixNano()) / 1e9
	id := ls.publish(t, "news", "update", "via redis")
	if ev := st.next(t); ev.ID != id || ev.Type != "update" || ev.Data != "via redis" {
		t.Fatalf("got %+v, want id %q", ev, id)
	}
	if got := counterValue(t, ls.Metrics(), "herald_broker_last_event_timestamp_seconds", ""); got < before {
		t.Errorf("herald_broker_last_event_timestamp_seconds %f, before the live event %f", got, before)
	}
	if _, ok := ls.broker.(*redisbroker.Broker); !ok {
		t.Fatal("not the Redis broker")
	} else if got, want := counterValue(t, ls.Metrics(), "herald_broker_refilled_events_total", ""), float64(ls.broker.(*redisbroker.Broker).Refilled()); got != want {
		t.Errorf("herald_broker_refilled_events_total %v, broker %v", got, want)
	}

	r.Stop(t)
	waitFor(t, 20*time.Second, "herald_broker_up 0", func() bool {
		return counterValue(t, ls.Metrics(), "herald_broker_up", "") == 0
	})
	resp, err := ls.client.PostForm(ls.URL+"/publish", url.Values{"topic": {"news"}, "data": {"lost?"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("publish with Redis down: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	resp, err = ls.client.Get(ls.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz with Redis down: %d, want 200", resp.StatusCode)
	}

	r.Start(t)
	waitFor(t, 20*time.Second, "herald_broker_up 1 again", func() bool {
		return counterValue(t, ls.Metrics(), "herald_broker_up", "") == 1
	})
	// The pub/sub connection that broke was replaced, and counted.
	waitFor(t, 10*time.Second, "a pub/sub reconnect counted", func() bool {
		m := ls.Metrics()
		return counterValue(t, m, "herald_broker_pubsub_reconnects_total", "error")+counterValue(t, m, "herald_broker_pubsub_reconnects_total", "unanswered") >= 1
	})
	id2 := ls.publish(t, "news", "", "back")
	// Redis came back empty (no persistence): the stream is told with a
	// herald.reset (reason epoch) before the new event, never a silent gap.
	ev := st.next(t)
	if ev.Type != "herald.reset" || ev.Data != `{"topic":"news","reason":"epoch"}` {
		t.Fatalf("after the restart got %+v, want herald.reset with reason epoch", ev)
	}
	if ev := st.next(t); ev.ID != id2 || ev.Data != "back" {
		t.Fatalf("after the reset got %+v, want id %q", ev, id2)
	}
}

// keyedPublish posts one event with an Idempotency-Key and returns the
// status and the id or error.
func (ls *liveServer) keyedPublish(t *testing.T, topic, data, key string) (int, string) {
	t.Helper()
	status, _, body := ls.do(t, "POST", "/publish", map[string]string{
		"Content-Type":    "application/x-www-form-urlencoded",
		"Idempotency-Key": key,
	}, url.Values{"topic": {topic}, "data": {data}}.Encode())
	var a struct{ ID, Error string }
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	if status == 200 {
		return status, a.ID
	}
	return status, a.Error
}

// TestIdempotencyAcrossReplicasHTTP: a publish via replica A retried via
// replica B with the same key returns A's id and appends nothing; other
// content under that key answers 422 on B.
func TestIdempotencyAcrossReplicasHTTP(t *testing.T) {
	r := testredis.Start(t)
	cfg := func(c *Config) { c.RedisURL = r.URL() }
	a, b := startServer(t, cfg), startServer(t, cfg)
	st := b.subscribe(t, "topic=keys", "")
	status, id := a.keyedPublish(t, "keys", "once", "order-17")
	if status != 200 {
		t.Fatalf("publish via A: %d %s", status, id)
	}
	if status, again := b.keyedPublish(t, "keys", "once", "order-17"); status != 200 || again != id {
		t.Fatalf("retry via B: %d %q, want 200 and A's id %q", status, again, id)
	}
	if status, msg := b.keyedPublish(t, "keys", "changed", "order-17"); status != 422 || !strings.Contains(msg, "order-17") {
		t.Fatalf("other content via B: %d %q, want 422 naming the key", status, msg)
	}
	next := b.publish(t, "keys", "", "next")
	if ev := st.next(t); ev.ID != id {
		t.Fatalf("first event %+v, want %q", ev, id)
	}
	if ev := st.next(t); ev.ID != next {
		t.Fatalf("second event %+v, want %q (the retry appended nothing)", ev, next)
	}
}

// TestLostRepliesRetriedHTTP: Redis runs publishes whose replies a proxy
// then loses (at random); the HTTP publisher gets 503 and retries with the
// same Idempotency-Key until it gets 200. Every event is in the log once,
// in order, and every retry after the first 200 returns the same id.
func TestLostRepliesRetriedHTTP(t *testing.T) {
	r := testredis.Start(t)
	p := faultproxy.NewReplyDropper(t, r.Addr)
	ls := startServer(t, func(c *Config) {
		c.RedisURL = "redis://" + p.Addr() + "/0?dial_timeout=1s&read_timeout=1s&write_timeout=1s"
	})
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1000
	ids := make([]string, n)
	lost := 0
	for i := range n {
		key := fmt.Sprintf("evt-%d", i)
		publish := func() string {
			for range 20 {
				if rng.IntN(5) == 0 {
					p.Arm()
				}
				status, v := ls.keyedPublish(t, "lossy", fmt.Sprint(i), key)
				if status == 200 {
					return v
				}
				if status != 503 {
					t.Fatalf("publish %d: %d %s", i, status, v)
				}
				lost++
			}
			t.Fatalf("publish %d: no 200 in 20 tries", i)
			return ""
		}
		ids[i] = publish()
		if again := publish(); again != ids[i] {
			t.Fatalf("publish %d: a retry returned %q, the first 200 %q", i, again, ids[i])
		}
	}
	t.Logf("%d events, %d answers 503 after lost replies (%d replies dropped)", n, lost, p.Dropped())
	if lost < n/10 {
		t.Errorf("only %d 503s: the fault did not bite", lost)
	}
	sub, err := ls.broker.Subscribe(t.Context(), []string{"lossy"}, broker.Cursor{"lossy": "0"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rd := brokertest.NewReader(sub)
	if !rd.Until(30*time.Second, func(rd *brokertest.Reader) bool { return rd.Count("lossy") >= n }) {
		t.Fatalf("log: %s", rd)
	}
	seq, err := brokertest.ParseSequence("lossy", rd.Items["lossy"])
	if err != nil {
		t.Fatal(err)
	}
	if got := seq.IDs(); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("log has %d events, want the %d ids answered, once each, in order", len(got), n)
	}
	for i, e := range seq.Events {
		if e.Data != fmt.Sprint(i) {
			t.Fatalf("event %d has data %q", i, e.Data)
		}
	}
}
