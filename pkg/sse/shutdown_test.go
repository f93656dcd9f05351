package sse

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// shutdownWithin shuts srv down and fails unless Shutdown returns nil
// within d.
func shutdownWithin(t *testing.T, srv *http.Server, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v after %v", err, time.Since(start))
	}
}

// TestTopicDefaultEndsOnShutdown: without Hijack, http.Server.Shutdown
// alone ends the streams (reason "drain") and returns once they ended,
// with no Drain call.
func TestTopicDefaultEndsOnShutdown(t *testing.T) {
	e := newTopicEnv(t, responseWriter, membroker.Config{})
	_, er := e.open("topic=a", "")
	id := e.publish("a", "", "x")
	if ev := er.next(wait); ev.ID != id {
		t.Fatalf("got %+v", ev)
	}
	shutdownWithin(t, e.srv.Config, wait)
	er.closed(wait)
	if n := e.h.Connections(); n != 0 {
		t.Fatalf("%d streams open after Shutdown", n)
	}
	if got := e.m.get(func(m *recMetrics) int { return m.closed["drain"] }); got != 1 {
		t.Fatalf("drain closes = %d, closes %v", got, e.m.closed)
	}
}

// TestTopicHijackedOutlivesShutdown: hijacked streams are not the
// server's (the documented bypass): Shutdown returns at once without
// ending them, and Drain ends them.
func TestTopicHijackedOutlivesShutdown(t *testing.T) {
	e := newTopicEnv(t, hijacked, membroker.Config{})
	_, er := e.open("topic=a", "")
	waitFor(t, wait, func() bool { return e.h.Connections() == 1 }, "the stream to open")
	shutdownWithin(t, e.srv.Config, wait)
	id := e.publish("a", "", "after shutdown")
	if ev := er.next(wait); ev.ID != id {
		t.Fatalf("got %+v", ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.h.Drain(ctx, 0); err != nil {
		t.Fatal(err)
	}
	er.closed(wait)
}

// TestHandlerEndsOnShutdown: a Serve handler's streams end when their
// server shuts down, and the stream function is stopped.
func TestHandlerEndsOnShutdown(t *testing.T) {
	stopped := make(chan struct{})
	h := Serve(func(ctx context.Context, s *Stream) error {
		defer close(stopped)
		if err := s.Send(Event{Data: "hello"}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}, nil)
	h.Heartbeat = -1
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	er := newEventReader(t, get(t, nil, srv.URL).Body)
	if ev := er.next(wait); ev.Data != "hello" {
		t.Fatalf("got %+v", ev)
	}
	shutdownWithin(t, srv.Config, wait)
	er.closed(wait)
	select {
	case <-stopped:
	case <-time.After(wait):
		t.Fatal("the stream function still runs after Shutdown")
	}
}

// A request that reaches a handler while its server shuts down gets 503,
// as while draining.
func TestNoStreamWhileServerShutsDown(t *testing.T) {
	b := membroker.New(membroker.Config{})
	t.Cleanup(func() { b.Close() })
	handlers := map[string]http.Handler{
		"Handler":      Serve(func(ctx context.Context, s *Stream) error { <-ctx.Done(); return nil }, nil),
		"TopicHandler": &TopicHandler{Broker: b, Logger: discardLogger()},
	}
	for name, h := range handlers {
		t.Run(name, func(t *testing.T) {
			srv := &http.Server{}
			req := func() *httptest.ResponseRecorder {
				r := httptest.NewRequest("GET", "/events?topic=a", nil)
				ctx, cancel := context.WithCancel(context.WithValue(r.Context(), http.ServerContextKey, srv))
				cancel() // the recorder's stream, if one starts, ends at once
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r.WithContext(ctx))
				return w
			}
			if w := req(); w.Code != http.StatusOK {
				t.Fatalf("before Shutdown: status %d", w.Code)
			}
			shutdownWithin(t, srv, wait) // runs the handler's hook (in a goroutine)
			waitFor(t, wait, func() bool { return req().Code == http.StatusServiceUnavailable }, "503 after Shutdown")
		})
	}
}
