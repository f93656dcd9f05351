package sse

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// streamGoroutines counts the goroutines that serve streams (a stream's own
// loop, or a parked stream's round in progress).
func streamGoroutines() int {
	buf := make([]byte, 8<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "(*topicStream).run(") || strings.Contains(g, "(*topicStream).driveParked(") {
			count++
		}
	}
	return count
}

// rawStream opens a stream with a bare TCP client (no client goroutine)
// and returns its reader once the response head has arrived.
func rawStream(t *testing.T, addr, query string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte("GET /events?" + query + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("status line %q: %v", line, err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	return conn, br
}

// readUntil reads lines until one starts with prefix.
func readUntil(t *testing.T, conn net.Conn, br *bufio.Reader, prefix string, within time.Duration) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for a line %q: %v", prefix, err)
		}
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

func parkEnv(t *testing.T, h *TopicHandler) (*membroker.Broker, *httptest.Server) {
	b := membroker.New(membroker.Config{HistorySize: 100})
	h.Broker = b
	if h.Logger == nil {
		h.Logger = discardLogger()
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() { b.Close() })
	t.Cleanup(srv.Close)
	return b, srv
}

// TestParkedStreamsHoldNoGoroutine: idle streams on raw connections keep
// no goroutine of their own, and still get their events; with NoPark each
// keeps one (the check can fail).
func TestParkedStreamsHoldNoGoroutine(t *testing.T) {
	const n = 100
	for _, tc := range []struct {
		noPark bool
		want   func(int) bool
	}{
		{false, func(g int) bool { return g == 0 }},
		{true, func(g int) bool { return g == n }},
	} {
		h := &TopicHandler{Hijack: true, Heartbeat: -1, NoPark: tc.noPark}
		b, srv := parkEnv(t, h)
		addr := srv.Listener.Addr().String()
		type cl struct {
			conn net.Conn
			br   *bufio.Reader
		}
		var cls []cl
		for range n {
			conn, br := rawStream(t, addr, "topic=idle")
			readUntil(t, conn, br, "id: ", wait) // the starting position
			cls = append(cls, cl{conn, br})
		}
		var g int
		deadline := time.Now().Add(wait)
		for g = streamGoroutines(); !tc.want(g) && time.Now().Before(deadline); g = streamGoroutines() {
			time.Sleep(10 * time.Millisecond)
		}
		if !tc.want(g) {
			t.Errorf("NoPark=%v: %d stream goroutines for %d idle streams", tc.noPark, g, n)
		}
		id, _ := b.Publish(context.Background(), "idle", broker.Message{Data: "hello"})
		for _, c := range cls {
			if l := readUntil(t, c.conn, c.br, "id: ", wait); strings.TrimSpace(l) != "id: "+id {
				t.Fatalf("got %q, want id %s", l, id)
			}
			if l := readUntil(t, c.conn, c.br, "data: ", wait); strings.TrimSpace(l) != "data: hello" {
				t.Fatalf("got %q", l)
			}
		}
		for _, c := range cls {
			c.conn.Close()
		}
		waitConns(t, h, 0)
	}
}

func waitConns(t *testing.T, h *TopicHandler, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for h.Connections() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", h.Connections(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestParkedHeartbeats: a parked stream gets its heartbeats without a
// goroutine waiting for them.
func TestParkedHeartbeats(t *testing.T) {
	h := &TopicHandler{Hijack: true, Heartbeat: 40 * time.Millisecond}
	_, srv := parkEnv(t, h)
	conn, br := rawStream(t, srv.Listener.Addr().String(), "topic=hb")
	start := time.Now()
	for range 5 {
		readUntil(t, conn, br, ":", time.Second)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("5 heartbeats within %v at a 40ms interval", d)
	}
}

// TestParkedDrain: a drain reaches parked streams: the retry hint, then
// the end; Drain returns once they have ended.
func TestParkedDrain(t *testing.T) {
	m := newRecMetrics()
	h := &TopicHandler{Hijack: true, Heartbeat: -1, Metrics: m.metrics()}
	_, srv := parkEnv(t, h)
	addr := srv.Listener.Addr().String()
	var conns []net.Conn
	var brs []*bufio.Reader
	for range 10 {
		c, br := rawStream(t, addr, "topic=d")
		readUntil(t, c, br, "id: ", wait)
		conns, brs = append(conns, c), append(brs, br)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := h.Drain(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		readUntil(t, c, brs[i], "retry: ", time.Second)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := brs[i].ReadString('\n'); err == nil {
			if _, err := brs[i].ReadString('\n'); err == nil {
				t.Errorf("stream %d still open after the drain", i)
			}
		}
	}
	if got := m.get(func(m *recMetrics) int { return m.closed["drain"] }); got != 10 {
		t.Errorf("%d streams closed for the drain, want 10", got)
	}
}

// TestParkedExpiry: a parked stream ends when its credentials expire.
func TestParkedExpiry(t *testing.T) {
	m := newRecMetrics()
	h := &TopicHandler{Hijack: true, Heartbeat: -1, Metrics: m.metrics(), OnConnect: func(r *http.Request) (int, http.Header, error) {
		ExpireAt(r, time.Now().Add(150*time.Millisecond))
		return DefaultOnConnect(r)
	}}
	_, srv := parkEnv(t, h)
	c, br := rawStream(t, srv.Listener.Addr().String(), "topic=e")
	readUntil(t, c, br, "id: ", wait)
	waitConns(t, h, 0)
	if got := m.get(func(m *recMetrics) int { return m.closed[CloseExpired] }); got != 1 {
		t.Errorf("closed as expired: %d", got)
	}
}

// TestParkedPeerGone: a parked stream whose client left is released (the
// connection watcher cancels it) without any event or heartbeat.
func TestParkedPeerGone(t *testing.T) {
	m := newRecMetrics()
	h := &TopicHandler{Hijack: true, Heartbeat: -1, Metrics: m.metrics()}
	_, srv := parkEnv(t, h)
	c, br := rawStream(t, srv.Listener.Addr().String(), "topic=g")
	readUntil(t, c, br, "id: ", wait)
	c.Close()
	waitConns(t, h, 0)
	if got := m.get(func(m *recMetrics) int { return m.closed["client"] }); got != 1 {
		t.Errorf("closed by the client: %d", got)
	}
}

// TestParkedSlowClient: a parked stream whose client stops reading is
// written by a goroutine with the write timeout, and cut.
func TestParkedSlowClient(t *testing.T) {
	m := newRecMetrics()
	h := &TopicHandler{Hijack: true, Heartbeat: -1, Metrics: m.metrics(), WriteTimeout: 200 * time.Millisecond}
	b, srv := parkEnv(t, h)
	c, br := rawStream(t, srv.Listener.Addr().String(), "topic=s")
	readUntil(t, c, br, "id: ", wait)
	big := strings.Repeat("x", 60<<10)
	deadline := time.Now().Add(wait)
	for h.Connections() > 0 && time.Now().Before(deadline) {
		_, _ = b.Publish(context.Background(), "s", broker.Message{Data: big})
		time.Sleep(time.Millisecond)
	}
	waitConns(t, h, 0)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed["slow"]+m.closed["error"] != 1 {
		t.Errorf("closed: %v, want one slow or error", m.closed)
	}
}
