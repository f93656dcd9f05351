package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The Docker client and testcontainers (Redis tests) keep goroutines
	// beyond a test by design.
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("github.com/testcontainers/testcontainers-go.(*DockerContainer).startLogProduction.func1"),
	)
}

// liveServer is a Server running on a loopback port with the in-process
// broker, as `go run ./cmd/server` runs it.
type liveServer struct {
	*Server
	URL    string
	stop   context.CancelFunc // a SIGTERM: starts the drain
	done   chan error         // Run's result
	client *http.Client
}

func startServer(t *testing.T, mutate func(*Config)) *liveServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DrainDelay = 0
	cfg.DrainTimeout = 10 * time.Second
	cfg.Heartbeat = time.Hour
	if mutate != nil {
		mutate(&cfg)
	}
	ls := runServer(t, cfg, Options{})
	waitFor(t, 5*time.Second, "server ready", func() bool {
		resp, err := ls.client.Get(ls.URL + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	})
	return ls
}

// runServer starts a server with cfg and opts (a test logger unless
// opts.Logger) and stops it when the test ends.
func runServer(t *testing.T, cfg Config, opts Options) *liveServer {
	t.Helper()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	s, err := New(t.Context(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ls := &liveServer{Server: s, URL: "http://" + ln.Addr().String(), stop: cancel, done: make(chan error, 1),
		client: &http.Client{Transport: &http.Transport{}}}
	go func() { ls.done <- s.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ls.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
			ls.done <- err // keep it readable for tests that waited already
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
		ls.client.CloseIdleConnections()
	})
	return ls
}

// testWriter sends server logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ls *liveServer) publish(t *testing.T, topic, event, data string) string {
	t.Helper()
	form := url.Values{"topic": {topic}, "data": {data}}
	if event != "" {
		form.Set("event", event)
	}
	resp, err := ls.client.PostForm(ls.URL+"/publish", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ID, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || out.ID == "" {
		t.Fatalf("publish: %d %q", resp.StatusCode, out.Error)
	}
	return out.ID
}

// sseEvent is one dispatched block of an event stream, parsed the way a
// browser does (enough of it for these tests).
type sseEvent struct {
	ID, Type, Data string
	HasData        bool
	Retry          string
}

type stream struct {
	resp   *http.Response
	r      *bufio.Reader
	cancel context.CancelFunc
	lastID string
	events chan sseEvent
	err    chan error
}

func (ls *liveServer) subscribe(t *testing.T, query, lastID string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", ls.URL+"/events?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := ls.client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		resp.Body.Close()
		cancel()
		t.Fatalf("subscribe %s: %d %q %s", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &stream{resp: resp, r: bufio.NewReader(resp.Body), cancel: cancel, events: make(chan sseEvent, 100), err: make(chan error, 1)}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	_ = s.resp.Body.Close()
}

// read parses blocks and sends every block that has data or an id.
func (s *stream) read() {
	var ev sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.err <- err
			close(s.events)
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if ev.HasData || ev.ID != "" || ev.Retry != "" {
				s.events <- ev
			}
			ev = sseEvent{}
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.ID = value
		case "event":
			ev.Type = value
		case "retry":
			ev.Retry = value
		case "data":
			if ev.HasData {
				ev.Data += "\n"
			}
			ev.Data += value
			ev.HasData = true
		}
	}
}

// next returns the next event that carries data.
func (s *stream) next(t *testing.T) sseEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("stream ended: %v", <-s.err)
			}
			if ev.ID != "" {
				s.lastID = ev.ID
			}
			if ev.HasData {
				return ev
			}
		case <-timeout:
			t.Fatal("no event within 5s")
		}
	}
}

func TestEndToEndPublishSubscribe(t *testing.T) {
	ls := startServer(t, nil)
	st := ls.subscribe(t, "topic=news", "")
	if got := st.resp.Header.Get("X-Accel-Buffering"); got != "no" {
		t.Errorf("X-Accel-Buffering %q", got)
	}
	id := ls.publish(t, "news", "", "hello\nworld")
	ev := st.next(t)
	if ev.ID != id || ev.Type != "" || ev.Data != "hello\nworld" {
		t.Fatalf("got %+v, want id %q data hello\\nworld", ev, id)
	}
	id2 := ls.publish(t, "news", "update", "second")
	if ev := st.next(t); ev.ID != id2 || ev.Type != "update" || ev.Data != "second" {
		t.Fatalf("got %+v, want id %q type update", ev, id2)
	}

	// Resume after the first event: exactly what followed it.
	id3 := ls.publish(t, "news", "", "third")
	resumed := ls.subscribe(t, "topic=news", id)
	for _, want := range []struct{ id, data string }{{id2, "second"}, {id3, "third"}} {
		if ev := resumed.next(t); ev.ID != want.id || ev.Data != want.data {
			t.Fatalf("resume: got %+v, want %+v", ev, want)
		}
	}

	if ev := st.next(t); ev.ID != id3 {
		t.Fatalf("live stream got %+v, want id %q", ev, id3)
	}

	// The JSON publish path reaches streams the same way.
	body := strings.NewReader(`{"topic":"news","event":"j","data":"from json"}`)
	resp, err := ls.client.Post(ls.URL+"/publish", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ev := st.next(t); ev.Type != "j" || ev.Data != "from json" {
		t.Fatalf("got %+v", ev)
	}

	// Metrics saw it.
	waitFor(t, 5*time.Second, "delivery metrics", func() bool {
		return counterValue(t, ls.Metrics(), "herald_events_delivered_total", "") >= 4 &&
			counterValue(t, ls.Metrics(), "herald_replayed_events_total", "resume") >= 2
	})
	if got := counterValue(t, ls.Metrics(), "herald_events_published_total", ""); got != 4 {
		t.Errorf("herald_events_published_total = %v, want 4", got)
	}
	if got := counterValue(t, ls.Metrics(), "herald_connections", ""); got != 2 {
		t.Errorf("herald_connections = %v, want 2", got)
	}
}

func TestEndToEndMultiTopicResume(t *testing.T) {
	ls := startServer(t, nil)
	st := ls.subscribe(t, "topic=a&topic=b", "")
	ls.publish(t, "a", "", "a1")
	ls.publish(t, "b", "", "b1")
	first := st.next(t)
	second := st.next(t)
	if first.Data != "a1" || second.Data != "b1" {
		t.Fatalf("got %q, %q", first.Data, second.Data)
	}
	ls.publish(t, "a", "", "a2")
	ls.publish(t, "b", "", "b2")
	// Resume from the composite cursor after b1: a2 and b2, nothing else.
	resumed := ls.subscribe(t, "topic=a&topic=b", second.ID)
	got := []string{resumed.next(t).Data, resumed.next(t).Data}
	if got[0] != "a2" || got[1] != "b2" {
		t.Fatalf("resume got %v", got)
	}
}

func TestEndToEndResetOnUnknownCursor(t *testing.T) {
	ls := startServer(t, nil)
	ls.publish(t, "news", "", "before")
	// A cursor from another broker epoch (another run) gets herald.reset.
	other := startServer(t, nil)
	foreign := other.publish(t, "news", "", "elsewhere")
	st := ls.subscribe(t, "topic=news", foreign)
	ev := st.next(t)
	if ev.Type != "herald.reset" {
		t.Fatalf("want herald.reset first, got %+v", ev)
	}
	var info struct{ Topic, Reason string }
	if err := json.Unmarshal([]byte(ev.Data), &info); err != nil || info.Topic != "news" || info.Reason == "" {
		t.Fatalf("reset data %q: %v", ev.Data, err)
	}
	waitFor(t, 5*time.Second, "reset metric", func() bool {
		return counterValue(t, ls.Metrics(), "herald_resets_total", info.Reason) == 1
	})
}

func TestEndToEndBadRequests(t *testing.T) {
	ls := startServer(t, nil)
	for _, q := range []string{"", "topic=", "topic=a%20b"} {
		resp, err := ls.client.Get(ls.URL + "/events?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("/events?%s: %d, want 400", q, resp.StatusCode)
		}
	}
}

func TestDrainClosesStreams(t *testing.T) {
	ls := startServer(t, func(c *Config) {
		c.DrainDelay = 300 * time.Millisecond
		c.DrainTimeout = 5 * time.Second
		c.DrainRetry = 100 * time.Millisecond
	})
	streams := []*stream{
		ls.subscribe(t, "topic=a", ""),
		ls.subscribe(t, "topic=b", ""),
		ls.subscribe(t, "topic=a&topic=b", ""),
	}
	waitFor(t, 5*time.Second, "3 connections", func() bool { return counterValue(t, ls.Metrics(), "herald_connections", "") == 3 })

	start := time.Now()
	ls.stop() // what SIGTERM does
	waitFor(t, 5*time.Second, "readiness off", func() bool { return !ls.Ready() })
	resp, err := ls.client.Get(ls.URL + "/readyz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != 503 && time.Since(start) < 300*time.Millisecond {
			t.Errorf("/readyz during the drain delay: %d, want 503", resp.StatusCode)
		}
	}
	for i, st := range streams {
		sawRetry := false
		for {
			select {
			case ev, ok := <-st.events:
				if ev.Retry != "" {
					sawRetry = true
				}
				if ok {
					continue
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("stream %d still open", i)
			}
			break
		}
		if !sawRetry {
			t.Errorf("stream %d closed without a retry hint", i)
		}
	}
	select {
	case err := <-ls.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		ls.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("drain took %v, beyond --drain-timeout", took)
	}
	if got := counterValue(t, ls.Metrics(), "herald_streams_closed_total", "drain"); got != 3 {
		t.Errorf("streams closed by drain: %v, want 3", got)
	}
}

func TestMainSignalDrain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	signals := make(chan os.Signal, 2)
	out := &syncBuffer{}
	code := make(chan int, 1)
	go func() {
		code <- Main([]string{"--addr", addr, "--drain-delay=0s", "--drain-timeout=5s", "--log-format=json"}, envMap(nil), out, signals)
	}()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	waitFor(t, 5*time.Second, "server ready", func() bool {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	for _, want := range []string{`"broker":"memory"`, "loopback addresses only", "--publish-allow"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("start-up log lacks %q:\n%s", want, out.String())
		}
	}
	signals <- syscall.SIGTERM
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d\n%s", c, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Main did not return after SIGTERM")
	}
	if !strings.Contains(out.String(), "drained") {
		t.Errorf("log lacks the drain:\n%s", out.String())
	}
}

func TestMainSecondSignalExits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	signals := make(chan os.Signal, 2)
	out := &syncBuffer{}
	code := make(chan int, 1)
	go func() {
		// A long drain delay: only a second signal ends it early.
		code <- Main([]string{"--addr", addr, "--drain-delay=20s", "--drain-timeout=25s"}, envMap(nil), out, signals)
	}()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	waitFor(t, 5*time.Second, "server ready", func() bool {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	signals <- syscall.SIGTERM
	waitFor(t, 5*time.Second, "draining", func() bool { return strings.Contains(out.String(), "draining") })
	signals <- syscall.SIGINT
	select {
	case c := <-code:
		if c != 1 {
			t.Fatalf("exit code %d, want 1", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second signal did not end Main")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEndToEndCORSStream(t *testing.T) {
	ls := startServer(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	req, err := http.NewRequest("GET", ls.URL+"/events?topic=news", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req = req.WithContext(ctx)
	req.Header.Set("Origin", "https://app.example")
	resp, err := ls.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
}

// TestEventsOnTheFastPath: the server runs its streams on sse's fast path
// (TopicHandler.Hijack): an HTTP/1.1 stream is the handler's own response
// on the connection (Connection: close, no chunked encoding), not
// net/http's.
func TestEventsOnTheFastPath(t *testing.T) {
	ls := startServer(t, nil)
	resp, err := ls.client.Get(ls.URL + "/events?topic=fast")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close || len(resp.TransferEncoding) != 0 {
		t.Fatalf("status %d, Connection: close %v, Transfer-Encoding %q: want a hijacked stream's head", resp.StatusCode, resp.Close, resp.TransferEncoding)
	}
}
