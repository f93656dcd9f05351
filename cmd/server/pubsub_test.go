package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/herald-sse/herald/internal/server"
	"github.com/herald-sse/herald/internal/testredis"
)

// startHerald serves a herald (in-memory broker unless mutate sets Redis)
// on a loopback port; wrap, if set, wraps its handler.
func startHerald(t *testing.T, mutate func(*server.Config), wrap func(http.Handler) http.Handler) string {
	t.Helper()
	cfg := server.DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

func withStdin(t *testing.T, s string) {
	t.Helper()
	old := stdin
	stdin = strings.NewReader(s)
	t.Cleanup(func() { stdin = old })
}

type jsonEvent struct{ ID, Event, Data string }

func TestPublishThenSubscribe(t *testing.T) {
	url := startHerald(t, nil, nil)
	env := map[string]string{"HERALD_URL": url}
	code, id1, errs := run(t, env, "publish", "news", "first")
	if code != 0 || id1 == "" {
		t.Fatalf("publish: %d %q %q", code, id1, errs)
	}
	id1 = strings.TrimSpace(id1)
	code, id2, _ := run(t, env, "publish", "--event", "update", "--idempotency-key", "k-2", "news", "line 1\nline 2")
	code2, again, _ := run(t, env, "publish", "--event", "update", "--idempotency-key", "k-2", "news", "line 1\nline 2")
	if code != 0 || code2 != 0 || again != id2 {
		t.Fatalf("publish with a key twice: %d %q, %d %q: want the same id", code, id2, code2, again)
	}
	withStdin(t, "from stdin")
	if code, _, errs := run(t, env, "publish", "news"); code != 0 {
		t.Fatalf("publish from stdin: %d %s", code, errs)
	}
	code, out, errs := run(t, env, "subscribe", "--json", "--count", "2", "--last-event-id", id1, "news")
	if code != 0 {
		t.Fatalf("subscribe: %d %s", code, errs)
	}
	var got []jsonEvent
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e jsonEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, e)
	}
	if len(got) != 2 || got[0].ID != strings.TrimSpace(id2) || got[0].Event != "update" || got[0].Data != "line 1\nline 2" || got[1].Data != "from stdin" {
		t.Fatalf("subscribe printed %+v", got)
	}
	code, out, _ = run(t, env, "subscribe", "--count", "1", "--last-event-id", id1, "news")
	if want := strings.TrimSpace(id2) + " update line 1\\nline 2\n"; code != 0 || out != want {
		t.Fatalf("readable subscribe: %d %q, want %q", code, out, want)
	}
}

// TestPublishRetriesWithTheSameKey: a 503 (or no answer) is retried with
// the same Idempotency-Key, made at random when none is given; a 422 is
// final.
func TestPublishRetriesWithTheSameKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	url := startHerald(t, nil, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/publish" {
				h.ServeHTTP(w, r)
				return
			}
			mu.Lock()
			keys = append(keys, r.Header.Get("Idempotency-Key"))
			n := len(keys)
			mu.Unlock()
			if n%3 != 0 { // two failures, then through
				if n%3 == 1 {
					h.ServeHTTP(httptest.NewRecorder(), r) // applied, answer lost
				}
				http.Error(w, `{"error":"broker unavailable"}`, http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	env := map[string]string{"HERALD_URL": url}
	code, id, errs := run(t, env, "publish", "orders", "42")
	if code != 0 || id == "" || strings.Count(errs, "retrying") != 2 {
		t.Fatalf("publish: %d %q %q", code, id, errs)
	}
	mu.Lock()
	if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Fatalf("attempts sent keys %q: want one random key, three times", keys)
	}
	mu.Unlock()
	// A foreign cursor: the reset, then the whole log: the event once.
	code, out, _ := run(t, env, "subscribe", "--json", "--count", "2", "--last-event-id", "x", "orders")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 ||
		!strings.Contains(lines[0], "herald.reset") || !strings.Contains(lines[1], strings.TrimSpace(id)) {
		t.Fatalf("the log is not the reset then the one event %q: %q", id, out)
	}
	// Other content under the same key: 422, not retried.
	mu.Lock()
	keys = nil
	mu.Unlock()
	code, _, errs = run(t, env, "publish", "--retry", "0", "--idempotency-key", "fixed", "orders", "a")
	if code != 1 { // the first attempt is refused with 503 by the wrapper
		t.Fatalf("publish --retry 0 against a 503: %d %s", code, errs)
	}
	code, _, errs = run(t, env, "publish", "--idempotency-key", "fixed", "orders", "b")
	if code != 1 || !strings.Contains(errs, "422") {
		t.Fatalf("conflicting content: %d %q, want exit 1 with the 422", code, errs)
	}
}

func TestPublishBatchAndUsage(t *testing.T) {
	url := startHerald(t, nil, nil)
	env := map[string]string{"HERALD_URL": url}
	withStdin(t, `{"topic":"a","data":"1"}`+"\n"+`{"topic":"b","data":"2","idempotency_key":"k"}`+"\n")
	code, out, errs := run(t, env, "publish", "--ndjson")
	if code != 0 || strings.Count(out, `"id"`) != 2 {
		t.Fatalf("batch: %d %q %q", code, out, errs)
	}
	withStdin(t, `{"topic":"a","data":"1"}`+"\n"+`{"topic":"bad topic"}`+"\n")
	if code, out, _ := run(t, env, "publish", "--ndjson"); code != 1 || !strings.Contains(out, `"status":400`) {
		t.Fatalf("batch with a bad event: %d %q, want exit 1 and the results", code, out)
	}
	for _, args := range [][]string{
		{"publish"}, {"publish", "bad topic", "x"}, {"publish", "--idempotency-key", "a b", "t", "x"},
		{"publish", "--event", "herald.x", "t", "x"}, {"publish", "--ndjson", "t"}, {"publish", "--url", "ftp://x", "t", "x"},
		{"subscribe"}, {"subscribe", "a", "a"}, {"subscribe", "--url", "nope", "a"},
	} {
		if code, _, errs := run(t, env, args...); code != 2 || errs == "" {
			t.Errorf("%q: exit %d, stderr %q; want 2 with a message", args, code, errs)
		}
	}
	for _, c := range []string{"publish", "subscribe"} {
		if code, _, errs := run(t, env, c, "--help"); code != 0 || !strings.Contains(errs, "Usage: herald "+c) {
			t.Errorf("%s --help: %d %q", c, code, errs)
		}
	}
}

// TestPublishIntoRedis: --redis-url publishes with FCALL, the key as its
// fourth argument.
func TestPublishIntoRedis(t *testing.T) {
	r := testredis.Start(t)
	url := startHerald(t, func(c *server.Config) { c.RedisURL = r.URL() }, nil) // loads the function library
	env := map[string]string{"HERALD_URL": url}
	var ids []string
	for range 2 {
		code, id, errs := run(t, env, "publish", "--redis-url", r.URL(), "--idempotency-key", "rk", "--event", "e", "rt", "via redis")
		if code != 0 {
			t.Fatalf("publish: %d %s", code, errs)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[1] {
		t.Fatalf("ids %q: the key did not hold", ids)
	}
	code, out, errs := run(t, env, "subscribe", "--count", "2", "--last-event-id", "x", "rt")
	if _, ev, _ := strings.Cut(out, "\n"); code != 0 || ev != strings.TrimSpace(ids[0])+" e via redis\n" {
		t.Fatalf("subscribe: %d %q %q", code, out, errs)
	}
	if code, _, errs := run(t, env, "publish", "--redis-url", r.URL(), "--idempotency-key", "rk", "rt", "other"); code != 1 || !strings.Contains(errs, "conflict") {
		t.Fatalf("conflict via redis: %d %q", code, errs)
	}
}
