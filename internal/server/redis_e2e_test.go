package server

import (
	"net/url"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
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
	id := ls.publish(t, "news", "update", "via redis")
	if ev := st.next(t); ev.ID != id || ev.Type != "update" || ev.Data != "via redis" {
		t.Fatalf("got %+v, want id %q", ev, id)
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
