package sse

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// lineReader reads an event stream line by line with a deadline per line.
type lineReader struct {
	t     testing.TB
	lines chan string
}

func newLineReader(t testing.TB, body io.ReadCloser) *lineReader {
	lr := &lineReader{t: t, lines: make(chan string, 1024)}
	go func() {
		defer close(lr.lines)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lr.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		body.Close()
		for range lr.lines {
		}
	})
	return lr
}

// next returns the next line, failing the test after d.
func (lr *lineReader) next(d time.Duration) (string, bool) {
	lr.t.Helper()
	select {
	case l, ok := <-lr.lines:
		return l, ok
	case <-time.After(d):
		lr.t.Fatalf("no line within %v", d)
		return "", false
	}
}

// block returns the next block of lines up to the blank line.
func (lr *lineReader) block(d time.Duration) []string {
	lr.t.Helper()
	var out []string
	for {
		l, ok := lr.next(d)
		if !ok {
			if len(out) == 0 {
				return nil
			}
			return out
		}
		if l == "" {
			return out
		}
		out = append(out, l)
	}
}

// eof waits for the end of the stream.
func (lr *lineReader) eof(d time.Duration) {
	lr.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-lr.lines:
			if !ok {
				return
			}
		case <-deadline:
			lr.t.Fatalf("stream did not end within %v", d)
		}
	}
}

func get(t testing.TB, c *http.Client, url string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestHandlerHeadersHTTP1AndHTTP2(t *testing.T) {
	stream := func(ctx context.Context, s *Stream) error {
		if err := s.Send(Event{ID: "1", Data: "hello"}); err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	}
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			srv := httptest.NewUnstartedServer(Serve(stream, nil))
			srv.EnableHTTP2 = h2
			if h2 {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			c := srv.Client()
			if h2 {
				c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
				c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
			}
			resp := get(t, c, srv.URL)
			if h2 && resp.ProtoMajor != 2 {
				t.Fatalf("proto = %s, want HTTP/2", resp.Proto)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			for k, want := range map[string]string{
				"Content-Type":      "text/event-stream; charset=utf-8",
				"Cache-Control":     "no-store",
				"X-Accel-Buffering": "no",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if resp.ContentLength != -1 || resp.Header.Get("Content-Length") != "" {
				t.Errorf("Content-Length set: %d", resp.ContentLength)
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Errorf("compressed: %q", resp.Header.Get("Content-Encoding"))
			}
			if h2 && resp.Header.Get("Connection") != "" {
				t.Errorf("Connection header on HTTP/2")
			}
			lr := newLineReader(t, resp.Body)
			if got := lr.block(5 * time.Second); strings.Join(got, "|") != "id: 1|data: hello" {
				t.Fatalf("block = %q", got)
			}
		})
	}
}

func TestOnConnectAnswers(t *testing.T) {
	errNoToken := errors.New("missing token")
	cases := []struct {
		name       string
		hook       OnConnect
		wantStatus int
		wantBody   string
		wantHeader [2]string
		streams    bool
	}{
		{"default", nil, 200, "", [2]string{"Content-Type", "text/event-stream; charset=utf-8"}, true},
		{"custom header kept", func(r *http.Request) (int, http.Header, error) {
			return 200, http.Header{"X-Session": {"abc"}}, nil
		}, 200, "", [2]string{"X-Session", "abc"}, true},
		{"zero status means ok", func(r *http.Request) (int, http.Header, error) { return 0, nil, nil }, 200, "", [2]string{"Cache-Control", "no-store"}, true},
		{"unauthorized shows message", func(r *http.Request) (int, http.Header, error) {
			return http.StatusUnauthorized, http.Header{"Www-Authenticate": {"Bearer"}}, errNoToken
		}, 401, "missing token\n", [2]string{"Www-Authenticate", "Bearer"}, false},
		{"forbidden without error uses status text", func(r *http.Request) (int, http.Header, error) { return 403, nil, nil }, 403, "Forbidden\n", [2]string{"Content-Type", "text/plain; charset=utf-8"}, false},
		{"server error hides details", func(r *http.Request) (int, http.Header, error) {
			return 0, nil, errors.New("db password wrong")
		}, 500, "Internal Server Error\n", [2]string{}, false},
		{"no content stops reconnecting", func(r *http.Request) (int, http.Header, error) { return 204, nil, nil }, 204, "", [2]string{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ran atomic.Bool
			h := Serve(func(ctx context.Context, s *Stream) error {
				ran.Store(true)
				return s.Send(Event{Data: "x"})
			}, tc.hook)
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			resp := get(t, nil, srv.URL)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.streams {
				if string(body) != "data: x\n\n" {
					t.Fatalf("body %q", body)
				}
			} else if string(body) != tc.wantBody {
				t.Fatalf("body %q, want %q", body, tc.wantBody)
			}
			if tc.wantHeader[0] != "" && resp.Header.Get(tc.wantHeader[0]) != tc.wantHeader[1] {
				t.Fatalf("%s = %q, want %q", tc.wantHeader[0], resp.Header.Get(tc.wantHeader[0]), tc.wantHeader[1])
			}
			if ran.Load() != tc.streams {
				t.Fatalf("stream function ran = %v, want %v", ran.Load(), tc.streams)
			}
		})
	}
}

func TestLastEventIDReachesStream(t *testing.T) {
	got := make(chan string, 4)
	h := Serve(func(ctx context.Context, s *Stream) error {
		got <- s.LastEventID()
		return nil
	}, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ url, hdr, want string }{
		{"/", "", ""},
		{"/", "42", "42"},
		{"/?lastEventId=7", "", "7"},
		{"/?lastEventId=7", "9", "9"}, // the header wins: it is the browser's latest
	} {
		var resp *http.Response
		if tc.hdr != "" {
			resp = get(t, nil, srv.URL+tc.url, "Last-Event-ID", tc.hdr)
		} else {
			resp = get(t, nil, srv.URL+tc.url)
		}
		_, _ = io.ReadAll(resp.Body)
		if g := <-got; g != tc.want {
			t.Errorf("%s with header %q: LastEventID = %q, want %q", tc.url, tc.hdr, g, tc.want)
		}
	}
	resp := get(t, nil, srv.URL+"/?lastEventId="+strings.Repeat("x", DefaultMaxCursorLen+1))
	if resp.StatusCode != 400 {
		t.Fatalf("oversized Last-Event-ID: status %d, want 400", resp.StatusCode)
	}
}

func TestStreamInvalidEventRefused(t *testing.T) {
	errs := make(chan error, 2)
	h := Serve(func(ctx context.Context, s *Stream) error {
		errs <- s.Send(Event{ID: "a\nb", Data: "x"})
		errs <- s.Send(Event{Type: "a\rb", Data: "x"})
		return s.Send(Event{Data: "ok"})
	}, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	body, _ := io.ReadAll(get(t, nil, srv.URL).Body)
	if string(body) != "data: ok\n\n" {
		t.Fatalf("body %q", body)
	}
	if e := <-errs; !errors.Is(e, ErrInvalidID) {
		t.Errorf("bad id: %v", e)
	}
	if e := <-errs; !errors.Is(e, ErrInvalidType) {
		t.Errorf("bad type: %v", e)
	}
}

func TestClientDisconnectEndsStream(t *testing.T) {
	ended := make(chan error, 1)
	h := Serve(func(ctx context.Context, s *Stream) error {
		for i := 0; ; i++ {
			if err := s.Send(Event{Data: fmt.Sprint(i)}); err != nil {
				ended <- err
				return err
			}
			select {
			case <-ctx.Done():
				ended <- ctx.Err()
				return nil
			case <-time.After(5 * time.Millisecond):
			}
		}
	}, nil)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	resp := get(t, nil, srv.URL)
	lr := newLineReader(t, resp.Body)
	lr.block(5 * time.Second)
	resp.Body.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream function still running after the client left")
	}
	waitFor(t, 5*time.Second, func() bool { return h.Connections() == 0 }, "connection count back to 0")
}

func TestStreamFunctionPanicIsContained(t *testing.T) {
	h := Serve(func(ctx context.Context, s *Stream) error {
		_ = s.Send(Event{Data: "before"})
		panic("boom")
	}, nil)
	h.Logger = discardLogger()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	body, _ := io.ReadAll(get(t, nil, srv.URL).Body)
	if string(body) != "data: before\n\n" {
		t.Fatalf("body %q", body)
	}
	// The server still serves.
	body, _ = io.ReadAll(get(t, nil, srv.URL).Body)
	if string(body) != "data: before\n\n" {
		t.Fatalf("second body %q", body)
	}
}

func TestHeartbeatComments(t *testing.T) {
	h := Serve(func(ctx context.Context, s *Stream) error { <-ctx.Done(); return nil }, nil)
	h.Heartbeat = 40 * time.Millisecond
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	lr := newLineReader(t, get(t, nil, srv.URL).Body)
	for i := 0; i < 3; i++ {
		if b := lr.block(5 * time.Second); len(b) != 1 || b[0] != ":" {
			t.Fatalf("heartbeat %d = %q", i, b)
		}
	}
}

func TestStreamSurvivesServerWriteTimeout(t *testing.T) {
	h := Serve(func(ctx context.Context, s *Stream) error {
		for i := 0; i < 6; i++ {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			if err := s.Send(Event{Data: fmt.Sprint(i)}); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = 200 * time.Millisecond // shorter than the stream
	srv.Start()
	t.Cleanup(srv.Close)
	body, err := io.ReadAll(get(t, nil, srv.URL).Body)
	if err != nil {
		t.Fatalf("stream cut: %v (got %q)", err, body)
	}
	if want := "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: 5\n\n"; string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
}

func TestDrainEndsStreamsWithRetryHint(t *testing.T) {
	h := Serve(func(ctx context.Context, s *Stream) error { <-ctx.Done(); return nil }, nil)
	h.Heartbeat = -1
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	var readers []*lineReader
	for i := 0; i < 3; i++ {
		readers = append(readers, newLineReader(t, get(t, nil, srv.URL).Body))
	}
	waitFor(t, 5*time.Second, func() bool { return h.Connections() == 3 }, "3 connections")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Drain(ctx, time.Second); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	for _, lr := range readers {
		b := lr.block(5 * time.Second)
		if len(b) != 1 || !strings.HasPrefix(b[0], "retry: ") {
			t.Fatalf("drain block = %q", b)
		}
		var ms int
		if _, err := fmt.Sscanf(b[0], "retry: %d", &ms); err != nil || ms < 500 || ms > 1500 {
			t.Fatalf("retry %q not within [500,1500] ms", b[0])
		}
		lr.eof(5 * time.Second)
	}
	resp := get(t, nil, srv.URL)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after drain: status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestMaxConnections(t *testing.T) {
	h := Serve(func(ctx context.Context, s *Stream) error { <-ctx.Done(); return nil }, nil)
	h.MaxConnections = 2
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	a, b := get(t, nil, srv.URL), get(t, nil, srv.URL)
	if a.StatusCode != 200 || b.StatusCode != 200 {
		t.Fatalf("statuses %d %d", a.StatusCode, b.StatusCode)
	}
	c := get(t, nil, srv.URL)
	if c.StatusCode != http.StatusServiceUnavailable || c.Header.Get("Retry-After") == "" {
		t.Fatalf("third: status %d, Retry-After %q", c.StatusCode, c.Header.Get("Retry-After"))
	}
	a.Body.Close()
	waitFor(t, 5*time.Second, func() bool { return h.Connections() == 1 }, "first connection released")
	if d := get(t, nil, srv.URL); d.StatusCode != 200 {
		t.Fatalf("after a slot freed: status %d", d.StatusCode)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
