package sse

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// A hook's ExpireAt ends the stream at that time, with reason "expired";
// streams without one stay open.
func TestTopicExpireAt(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		e := newTopicEnv(t, m, membroker.Config{HistorySize: 10})
		e.h.OnConnect = func(r *http.Request) (int, http.Header, error) {
			if r.URL.Query().Get("expire") != "" {
				if !ExpireAt(r, time.Now().Add(300*time.Millisecond)) {
					t.Error("ExpireAt outside a TopicHandler hook")
				}
			}
			return DefaultOnConnect(r)
		}
		_, short := e.open("topic=a&expire=1", "")
		_, long := e.open("topic=a", "")
		id := e.publish("a", "", "x")
		if ev := short.next(wait); ev.ID != id {
			t.Fatalf("got %+v", ev)
		}
		start := time.Now()
		short.closed(wait)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("stream ended %v after the event, expiry was 300ms", d)
		}
		waitUntil(t, "expired reason", func() bool {
			return e.m.get(func(m *recMetrics) int { return m.closed[CloseExpired] }) == 1
		})
		// The other stream is still served.
		id2 := e.publish("a", "", "y")
		long.next(wait)
		if ev := long.next(wait); ev.ID != id2 {
			t.Fatalf("long stream got %+v", ev)
		}
	})
}

func TestExpireAtOutsideHook(t *testing.T) {
	if ExpireAt(httptest.NewRequest("GET", "/", nil), time.Now()) {
		t.Fatal("ExpireAt reported success on a plain request")
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
