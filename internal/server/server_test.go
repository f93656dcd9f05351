package server

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newTestServer(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DrainDelay = 0
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(t.Context(), cfg, Options{Broker: &fakeBroker{}, BrokerKind: "fake", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, h http.Handler, method, target string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHealthAndReadiness(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	if rec := get(t, h, "GET", "/healthz", nil); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Fatalf("/healthz: %d %q", rec.Code, rec.Body)
	}
	if rec := get(t, h, "GET", "/readyz", nil); rec.Code != 503 {
		t.Fatalf("/readyz before Serve: %d, want 503", rec.Code)
	}
	s.started.Store(true)
	if rec := get(t, h, "GET", "/readyz", nil); rec.Code != 200 {
		t.Fatalf("/readyz while serving: %d", rec.Code)
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rec := get(t, h, "GET", "/readyz", nil); rec.Code != 503 || !strings.Contains(rec.Body.String(), "draining") {
		t.Fatalf("/readyz while draining: %d %q", rec.Code, rec.Body)
	}
	if rec := get(t, h, "GET", "/healthz", nil); rec.Code != 200 {
		t.Fatalf("/healthz while draining: %d", rec.Code)
	}
	if rec := get(t, h, "POST", "/healthz", nil); rec.Code != 405 {
		t.Fatalf("POST /healthz: %d", rec.Code)
	}
}

func TestMetricsExposition(t *testing.T) {
	s := newTestServer(t, nil)
	rec := get(t, s.Handler(), "GET", "/metrics", nil)
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	body := rec.Body.String()
	for _, name := range []string{
		"herald_connections", "herald_streams_total", "herald_streams_closed_total", "herald_events_published_total",
		"herald_publish_errors_total", "herald_events_delivered_total", "herald_replayed_events_total",
		"herald_resets_total", "herald_slow_consumer_disconnects_total", "herald_delivery_latency_seconds_bucket",
		"herald_broker_up 1", `herald_broker_pubsub_reconnects_total{reason="unanswered"} 0`, "go_goroutines", "process_start_time_seconds",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestDemoPage(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.Handler()
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `id="pub-result"`},
		{"/demo.js", "text/javascript; charset=utf-8", "window.herald"},
		{"/demo.css", "text/css; charset=utf-8", "#events"},
	} {
		rec := get(t, h, "GET", tc.path, nil)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != tc.ctype {
			t.Fatalf("%s: %d %q", tc.path, rec.Code, rec.Header().Get("Content-Type"))
		}
		if !strings.Contains(rec.Body.String(), tc.contains) {
			t.Fatalf("%s lacks %q", tc.path, tc.contains)
		}
		if rec.Header().Get("Content-Security-Policy") == "" {
			t.Fatalf("%s without CSP", tc.path)
		}
	}
	page := get(t, h, "GET", "/", nil).Body.String()
	for _, id := range []string{"topics", "types", "connect", "disconnect", "state", "reconnects", "events", "pub-topic", "pub-event", "pub-data", "publish", "pub-result"} {
		if !strings.Contains(page, `id="`+id+`"`) {
			t.Errorf("demo page lacks #%s", id)
		}
	}
	// Nothing is loaded from elsewhere, and data never goes through innerHTML.
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Error("demo page references an external resource")
	}
	js := get(t, h, "GET", "/demo.js", nil).Body.String()
	if strings.Contains(js, "innerHTML") {
		t.Error("demo.js uses innerHTML")
	}
	if rec := get(t, h, "GET", "/nope", nil); rec.Code != 404 {
		t.Fatalf("/nope: %d", rec.Code)
	}
	if rec := get(t, h, "HEAD", "/", nil); rec.Code != 200 {
		t.Fatalf("HEAD /: %d", rec.Code)
	}
}

func TestCORS(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	h := s.Handler()
	rec := get(t, h, "OPTIONS", "/events?topic=a", map[string]string{
		"Origin": "https://app.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "last-event-id",
	})
	if rec.Code != 204 || rec.Header().Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(rec.Header().Get("Access-Control-Allow-Headers"), "Last-Event-ID") ||
		rec.Header().Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	rec = get(t, h, "OPTIONS", "/publish", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
	if rec.Code != 204 || !strings.Contains(rec.Header().Get("Access-Control-Allow-Methods"), "POST") {
		t.Fatalf("publish preflight: %d %v", rec.Code, rec.Header())
	}
	rec = get(t, h, "OPTIONS", "/publish", map[string]string{"Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin got CORS headers: %v", rec.Header())
	}

	star := newTestServer(t, func(c *Config) { c.CORSOrigins = []string{"*"} }).Handler()
	rec = get(t, star, "OPTIONS", "/events?topic=a", map[string]string{"Origin": "https://any.example", "Access-Control-Request-Method": "GET"})
	if rec.Header().Get("Access-Control-Allow-Origin") != "*" || rec.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("star preflight: %v", rec.Header())
	}

	none := newTestServer(t, nil).Handler()
	rec = get(t, none, "OPTIONS", "/events?topic=a", map[string]string{"Origin": "https://any.example", "Access-Control-Request-Method": "GET"})
	if rec.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("CORS off but headers sent: %v", rec.Header())
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HistorySize = -1
	if _, err := New(t.Context(), cfg, Options{Broker: &fakeBroker{}, Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

func TestMainExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		code int
		out  string
	}{
		{[]string{"--help"}, nil, 0, "--redis-url"},
		{[]string{"--heartbeat=x"}, nil, 2, "--heartbeat"},
		{[]string{"extra"}, nil, 2, "unexpected argument"},
		{nil, map[string]string{"HERALD_JWT_SECRET": "k"}, 2, "HERALD_JWT_SECRET"},
		{[]string{"--addr=256.0.0.1:0"}, nil, 1, "cannot listen"},
	} {
		var out strings.Builder
		code := Main(tc.args, envMap(tc.env), &out, nil)
		if code != tc.code || !strings.Contains(out.String(), tc.out) {
			t.Errorf("Main(%v, %v) = %d, output %q; want %d containing %q", tc.args, tc.env, code, out.String(), tc.code, tc.out)
		}
	}
}
