package sse_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-sse/herald/pkg/sse"
)

// connection is what the test server saw of one request.
type connection struct {
	header http.Header
	start  time.Time
	end    time.Time
}

// testServer serves each request with handle, passing the request's
// number (0-based), and records what it saw.
type testServer struct {
	*httptest.Server
	mu    sync.Mutex
	conns []connection
}

func newServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, n int)) *testServer {
	t.Helper()
	s := &testServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.conns)
		s.conns = append(s.conns, connection{header: r.Header.Clone(), start: time.Now()})
		s.mu.Unlock()
		handle(w, r, n)
		s.mu.Lock()
		s.conns[n].end = time.Now()
		s.mu.Unlock()
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *testServer) connections() []connection {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]connection(nil), s.conns...)
}

// stream answers as an event stream and writes the given wire text.
func stream(w http.ResponseWriter, text string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, text)
	w.(http.Flusher).Flush()
}

// hold keeps a stream open until the client goes away.
func hold(r *http.Request) { <-r.Context().Done() }

var errStop = errors.New("stop")

// collect returns an fn that records events and stops after n of them.
func collect(n int, got *[]sse.Event) func(sse.Event) error {
	return func(e sse.Event) error {
		*got = append(*got, e)
		if len(*got) == n {
			return errStop
		}
		return nil
	}
}

// noLeaks checks, after the test and its cleanups (such as closing its
// servers), that it left no goroutine behind.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientReceivesEvents(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		stream(w, ": hello\n\nid: 1\nevent: greet\ndata: a\ndata: b\n\ndata: c\r\n\r\n")
		hold(r)
	})
	c := &sse.Client{HTTPClient: srv.Client(), Header: http.Header{"Authorization": {"Bearer t"}}}
	var got []sse.Event
	err := c.Subscribe(context.Background(), srv.URL, collect(2, &got))
	if err != errStop {
		t.Fatalf("Subscribe returned %v, want fn's error", err)
	}
	want := []sse.Event{{ID: "1", Type: "greet", Data: "a\nb"}, {ID: "1", Data: "c"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	h := srv.connections()[0].header
	if h.Get("Accept") != "text/event-stream" || h.Get("Authorization") != "Bearer t" || h.Get("Cache-Control") != "no-cache" {
		t.Errorf("request headers %v", h)
	}
	if _, ok := h["Last-Event-Id"]; ok {
		t.Errorf("first request sent Last-Event-ID %q; want none", h.Get("Last-Event-ID"))
	}
	if c.LastID() != "1" || c.LastEventID != "1" {
		t.Errorf("LastID() = %q, LastEventID = %q; want 1", c.LastID(), c.LastEventID)
	}
}

// C5: reconnect after the stream ends, with Last-Event-ID only when
// non-empty; id-only blocks and empty ids count.
func TestClientReconnectSendsLastEventID(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 0:
			stream(w, "retry: 1\nid: 1\ndata: a\n\nid: 2\n\n") // then EOF
		case 1:
			stream(w, "data: b\n\nid\n\n") // id reset, then EOF
		case 2:
			stream(w, "id: 3\ndata: c\n\nid: 4\ndata: unfinished\n") // EOF
		case 3:
			stream(w, "data: d\n\n")
			hold(r)
		}
	})
	// A Last-Event-ID in Header must not leak into a request that should
	// have none.
	c := &sse.Client{HTTPClient: srv.Client(), LastEventID: "0", Header: http.Header{"Last-Event-Id": {"stale"}}}
	var got []sse.Event
	err := c.Subscribe(context.Background(), srv.URL, collect(4, &got))
	if err != errStop {
		t.Fatalf("Subscribe returned %v", err)
	}
	want := []sse.Event{{ID: "1", Data: "a", Retry: time.Millisecond}, {ID: "2", Data: "b"}, {ID: "3", Data: "c"}, {ID: "3", Data: "d"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %+v\nwant %+v", got, want)
	}
	conns := srv.connections()
	if len(conns) != 4 {
		t.Fatalf("%d connections, want 4", len(conns))
	}
	for i, want := range []string{"0", "2", "", "3"} {
		v, ok := conns[i].header["Last-Event-Id"]
		if want == "" && ok {
			t.Errorf("connection %d sent Last-Event-ID %q, want none", i, v)
		}
		if want != "" && (len(v) != 1 || v[0] != want) {
			t.Errorf("connection %d sent Last-Event-ID %q, want %q", i, v, want)
		}
	}
	if c.LastID() != "3" {
		t.Errorf("LastID() = %q after return, want 3", c.LastID())
	}
}

// The client works the same over HTTP/2, where a stream ends without
// closing the connection.
func TestClientHTTP2(t *testing.T) {
	noLeaks(t)
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Proto+" "+r.Header.Get("Last-Event-ID"))
		n := len(seen)
		mu.Unlock()
		stream(w, fmt.Sprintf("retry: 1\nid: %d\ndata: %d\n\n", n, n))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := &sse.Client{HTTPClient: srv.Client()}
	var got []sse.Event
	if err := c.Subscribe(context.Background(), srv.URL, collect(3, &got)); err != errStop {
		t.Fatalf("Subscribe returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"HTTP/2.0 ", "HTTP/2.0 1", "HTTP/2.0 2"}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("server saw %q, want %q", seen, want)
	}
}

// C5: the delay before reconnecting is the client's Retry, then the
// server's retry field. Only lower bounds are checked: a timer never fires
// early, while upper bounds would depend on the machine's load.
func TestClientRetryDelay(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch n {
		case 0:
			stream(w, "data: 0\n\n")
		case 1:
			stream(w, "data: 1\n\nretry: 300\n\n")
		case 2:
			stream(w, "data: 2\n\n") // the server's retry persists
		default:
			stream(w, "data: 3\n\n")
			hold(r)
		}
	})
	c := &sse.Client{HTTPClient: srv.Client(), Retry: 100 * time.Millisecond}
	var got []sse.Event
	if err := c.Subscribe(context.Background(), srv.URL, collect(4, &got)); err != errStop {
		t.Fatalf("Subscribe returned %v", err)
	}
	conns := srv.connections()
	for i, min := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond} {
		if gap := conns[i+1].start.Sub(conns[i].end); gap < min {
			t.Errorf("reconnect %d came after %v, want at least %v", i+1, gap, min)
		}
	}
}

// C5 and H2: any answer but a 200 event stream is final; 204 means stop.
func TestClientFinalAnswers(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
	}{
		{"204 stop", http.StatusNoContent, "text/event-stream", ""},
		{"400", http.StatusBadRequest, "text/plain", "bad cursor"},
		{"404", http.StatusNotFound, "text/plain", "no such topic"},
		{"500", http.StatusInternalServerError, "text/event-stream", "data: x\n\n"},
		{"503", http.StatusServiceUnavailable, "text/plain", "busy"},
		{"200 text/plain", http.StatusOK, "text/plain", "data: x\n\n"},
		{"200 no content type", http.StatusOK, "", "data: x\n\n"},
		{"200 text/event-streams", http.StatusOK, "text/event-streams", "data: x\n\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header()["Content-Type"] = []string{tc.ctype}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			c := &sse.Client{HTTPClient: srv.Client(), Retry: time.Millisecond}
			err := c.Subscribe(context.Background(), srv.URL, func(e sse.Event) error {
				t.Errorf("unexpected event %+v", e)
				return nil
			})
			var se *sse.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Subscribe returned %v, want a *StatusError", err)
			}
			if se.StatusCode != tc.status || se.ContentType != tc.ctype || se.Body != tc.body {
				t.Errorf("StatusError %+v, want %d %q %q", se, tc.status, tc.ctype, tc.body)
			}
			if n := len(srv.connections()); n != 1 {
				t.Errorf("%d connections, want 1 (no reconnect)", n)
			}
		})
	}
}

func TestClientAcceptsContentTypeParameters(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Type", "Text/Event-Stream; charset=utf-8")
		io.WriteString(w, "data: x\n\n")
	})
	c := &sse.Client{HTTPClient: srv.Client()}
	var got []sse.Event
	if err := c.Subscribe(context.Background(), srv.URL, collect(1, &got)); err != errStop {
		t.Fatalf("Subscribe returned %v", err)
	}
}

// C6: cancelling the context ends Subscribe with ctx.Err() and leaves no
// goroutine behind, whether it is reading or waiting to reconnect.
func TestClientCancel(t *testing.T) {
	for _, phase := range []string{"reading", "waiting"} {
		t.Run(phase, func(t *testing.T) {
			noLeaks(t)
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
				stream(w, "data: x\n\n")
				if phase == "reading" {
					hold(r)
				}
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opened := make(chan struct{}, 1)
			c := &sse.Client{
				HTTPClient: srv.Client(),
				Retry:      time.Hour,
				OnOpen:     func(*http.Response) { opened <- struct{}{} },
			}
			done := make(chan error, 1)
			events := make(chan sse.Event, 1)
			go func() {
				done <- c.Subscribe(ctx, srv.URL, func(e sse.Event) error { events <- e; return nil })
			}()
			<-opened
			<-events
			if phase == "waiting" {
				waitFor(t, "the stream to end", func() bool { return !srv.connections()[0].end.IsZero() })
			}
			cancel()
			select {
			case err := <-done:
				if err != context.Canceled {
					t.Fatalf("Subscribe returned %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Subscribe did not return after cancel")
			}
			if n := len(srv.connections()); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}
}

// C6: an event over MaxEventSize ends the subscription.
func TestClientMaxEventSize(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		stream(w, "data: small\n\ndata: "+strings.Repeat("x", 101)+"\n\n")
		hold(r)
	})
	c := &sse.Client{HTTPClient: srv.Client(), MaxEventSize: 100, Retry: time.Millisecond}
	var got []sse.Event
	err := c.Subscribe(context.Background(), srv.URL, collect(10, &got))
	if !errors.Is(err, sse.ErrEventTooLarge) || len(got) != 1 {
		t.Fatalf("Subscribe returned %v after %d events, want ErrEventTooLarge after 1", err, len(got))
	}
	if n := len(srv.connections()); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

func TestClientMaxRetries(t *testing.T) {
	noLeaks(t)
	// A server that accepted once and is gone now: connections are refused.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &sse.Client{HTTPClient: &http.Client{Transport: tr}, Retry: time.Millisecond, MaxRetries: 3}
	err := c.Subscribe(context.Background(), url, func(sse.Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "after 4 failed attempts") {
		t.Fatalf("Subscribe returned %v, want giving up after 4 attempts", err)
	}

	// A stream that opened resets the count: the server ends three streams
	// then refuses with a network error (hijack and close) twice.
	srv2 := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n < 3 {
			stream(w, fmt.Sprintf("data: %d\n\n", n))
			return
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	c = &sse.Client{HTTPClient: srv2.Client(), Retry: time.Millisecond, MaxRetries: 1}
	var got []sse.Event
	err = c.Subscribe(context.Background(), srv2.URL, collect(10, &got))
	if err == nil || !strings.Contains(err.Error(), "after 2 failed attempts") || len(got) != 3 {
		t.Fatalf("Subscribe returned %v after %d events", err, len(got))
	}

	// Negative: no reconnection; a clean end of stream is io.EOF.
	c = &sse.Client{HTTPClient: srv2.Client(), MaxRetries: -1}
	got = nil
	if err := c.Subscribe(context.Background(), srv2.URL, collect(10, &got)); err == nil {
		t.Fatalf("Subscribe with MaxRetries -1 returned nil")
	}
	srv3 := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) { stream(w, "data: x\n\n") })
	c = &sse.Client{HTTPClient: srv3.Client(), MaxRetries: -1}
	got = nil
	if err := c.Subscribe(context.Background(), srv3.URL, collect(10, &got)); err != io.EOF || len(got) != 1 {
		t.Fatalf("Subscribe with MaxRetries -1 returned %v after %d events, want io.EOF after 1", err, len(got))
	}
}

// A stream that goes silent past IdleTimeout is treated as broken.
func TestClientIdleTimeout(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		stream(w, fmt.Sprintf("id: %d\ndata: %d\n\n", n, n))
		hold(r) // silent until the client hangs up
	})
	c := &sse.Client{HTTPClient: srv.Client(), Retry: time.Millisecond, IdleTimeout: 50 * time.Millisecond}
	var got []sse.Event
	if err := c.Subscribe(context.Background(), srv.URL, collect(2, &got)); err != errStop {
		t.Fatalf("Subscribe returned %v", err)
	}
	if h := srv.connections()[1].header.Get("Last-Event-ID"); h != "0" {
		t.Errorf("reconnect sent Last-Event-ID %q, want 0", h)
	}
}

// LastID may be read while Subscribe runs (the race detector checks).
func TestClientLastIDConcurrent(t *testing.T) {
	noLeaks(t)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		var b strings.Builder
		for i := range 50 {
			fmt.Fprintf(&b, "id: %d\ndata: x\n\n", i)
		}
		stream(w, b.String())
		hold(r)
	})
	c := &sse.Client{HTTPClient: srv.Client()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- c.Subscribe(ctx, srv.URL, func(e sse.Event) error {
			if e.ID == "49" {
				return errStop
			}
			return nil
		})
	}()
	waitFor(t, "the last id", func() bool { return c.LastID() == "49" })
	if err := <-done; err != errStop {
		t.Fatalf("Subscribe returned %v", err)
	}
}

func TestClientBadURL(t *testing.T) {
	c := &sse.Client{Retry: time.Millisecond}
	if err := c.Subscribe(context.Background(), "http://[::1", func(sse.Event) error { return nil }); err == nil {
		t.Fatal("Subscribe with a malformed URL returned nil")
	}
}

func ExampleClient_Subscribe() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		if r.Header.Get("Last-Event-ID") == "" {
			// First connection: two events, then the stream ends.
			io.WriteString(w, "retry: 10\n\nid: 1\ndata: hello\n\nid: 2\nevent: note\ndata: two\ndata: lines\n\n")
			return
		}
		// The client reconnected, telling where it stopped.
		fmt.Fprintf(w, "data: resumed after %s\n\n", r.Header.Get("Last-Event-ID"))
	}))
	defer srv.Close()

	c := &sse.Client{HTTPClient: srv.Client()}
	n := 0
	err := c.Subscribe(context.Background(), srv.URL, func(e sse.Event) error {
		fmt.Printf("id=%q type=%q data=%q\n", e.ID, e.Type, e.Data)
		if n++; n == 3 {
			return errors.New("enough")
		}
		return nil
	})
	fmt.Println(err, c.LastEventID)
	// Output:
	// id="1" type="" data="hello"
	// id="2" type="note" data="two\nlines"
	// id="2" type="" data="resumed after 2"
	// enough 2
}

func ExampleDecoder() {
	d := sse.NewDecoder(strings.NewReader("id: 7\nevent: greet\ndata: hi\r\n\r\n: comment\ndata: x\rdata: y\r\r"))
	for {
		e, err := d.Next()
		if err != nil {
			fmt.Println(err, d.LastEventID())
			return
		}
		fmt.Printf("%q %q %q\n", e.ID, e.Type, e.Data)
	}
	// Output:
	// "7" "greet" "hi"
	// "7" "" "x\ny"
	// EOF 7
}
