package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Every limit of the HTTP contract answers with its status and a message
// naming what to change.
func TestLimits(t *testing.T) {
	ls := startServer(t, func(c *Config) {
		c.MaxConnections = 2
		c.MaxTopics = 3
		c.MaxEventBytes = 100
		c.MaxBodyBytes = 1000
		c.MaxLastEventIDBytes = 600
	})
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for _, tc := range []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		body   string
		status int
		want   string // in the body
	}{
		{"too many topics", "GET", "/events?topic=a&topic=b&topic=c&topic=d", nil, "", 400, "too many topics"},
		{"duplicates count once", "GET", "/events?topic=a&topic=a&topic=b&topic=c", nil, "", 200, ""},
		{"topic of 257 bytes", "GET", "/events?topic=" + strings.Repeat("t", 257), nil, "", 400, "limit is 256"},
		{"topic of 256 bytes", "GET", "/events?topic=" + strings.Repeat("t", 256), nil, "", 200, ""},
		{"topic with a space", "GET", "/events?topic=a%20b", nil, "", 400, "printable ASCII"},
		{"topic with NUL", "GET", "/events?topic=a%00b", nil, "", 400, "printable ASCII"},
		{"topic with UTF-8", "GET", "/events?topic=%C3%A9", nil, "", 400, "printable ASCII"},
		{"empty topic", "GET", "/events?topic=", nil, "", 400, "empty topic"},
		{"Last-Event-ID too long", "GET", "/events?topic=a", map[string]string{"Last-Event-ID": strings.Repeat("1", 601)}, "", 400, "limit is 600"},
		{"Last-Event-ID with a non-ASCII byte", "GET", "/events?topic=a", map[string]string{"Last-Event-ID": "1\xe9"}, "", 400, "printable ASCII"},
		{"Last-Event-ID with a space", "GET", "/events?topic=a", map[string]string{"Last-Event-ID": "1 2"}, "", 400, "printable ASCII"},
		{"publish topic too long", "POST", "/publish", form, "data=x&topic=" + strings.Repeat("t", 257), 400, "limit is 256"},
		{"publish event type with LF", "POST", "/publish", form, "topic=a&data=x&event=a%0Ab", 400, "CR, LF or NUL"},
		{"publish data over --max-event-bytes", "POST", "/publish", form, "topic=a&data=" + strings.Repeat("x", 101), 413, "--max-event-bytes"},
		{"publish body over --max-body-bytes", "POST", "/publish", form, "topic=a&data=" + strings.Repeat("x", 1001), 413, "--max-body-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, _, body := ls.do(t, tc.method, tc.path, tc.hdr, tc.body)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("%d %q, want %d with %q", status, body, tc.status, tc.want)
			}
		})
	}

	// --max-connections: the third stream gets 503 + Retry-After; existing
	// streams stay.
	waitFor(t, 5*time.Second, "earlier streams closed", func() bool { return ls.events.Connections() == 0 })
	ls.subscribe(t, "topic=a", "")
	ls.subscribe(t, "topic=b", "")
	status, h, body := ls.do(t, "GET", "/events?topic=c", nil, "")
	if status != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "too many connections") {
		t.Fatalf("third stream: %d %v %q", status, h, body)
	}
	if n := ls.events.Connections(); n != 2 {
		t.Fatalf("%d streams open", n)
	}
}

// A client that sends its headers slowly (slowloris) is cut at
// --read-header-timeout; an idle keep-alive connection at --idle-timeout.
func TestSlowHeadersAndIdleConnections(t *testing.T) {
	ls := startServer(t, func(c *Config) {
		c.ReadHeaderTimeout = 300 * time.Millisecond
		c.IdleTimeout = 500 * time.Millisecond
	})
	addr := strings.TrimPrefix(ls.URL, "http://")
	// The server closed the connection: EOF, or a reset when it closed
	// with bytes of ours unread (the trickled headers), which makes the
	// kernel answer with RST. Only the read deadline means "still open".
	closedWithin := func(conn net.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		return err == nil || !(errors.As(err, &ne) && ne.Timeout())
	}

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	if _, err := io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Keep trickling header bytes; the server must still cut it.
	go func() {
		for range 50 {
			time.Sleep(50 * time.Millisecond)
			if _, err := io.WriteString(slow, "X-A: b\r\n"); err != nil {
				return
			}
		}
	}()
	if !closedWithin(slow, 10*time.Second) {
		t.Fatal("slow-header connection not closed")
	}
	t.Logf("slow-header connection closed after %v", time.Since(start).Round(time.Millisecond))

	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: %v, want EOF", err)
	}
}
