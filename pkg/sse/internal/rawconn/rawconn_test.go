package rawconn

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestHead(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "text/event-stream")
	h.Set("Content-Length", "10")
	h.Set("Transfer-Encoding", "chunked")
	h.Set("X-Bad", "a\r\nInjected: 1")
	h["Bad Key"] = []string{"x"}
	got := string(Head(h))
	if !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\nConnection: close\r\n\r\n") {
		t.Fatalf("head %q", got)
	}
	if !strings.Contains(got, "\r\nContent-Type: text/event-stream\r\n") || !strings.Contains(got, "\r\nDate: ") {
		t.Errorf("head %q lacks Content-Type or Date", got)
	}
	for _, bad := range []string{"Content-Length", "Transfer-Encoding", "Injected", "Bad Key"} {
		if strings.Contains(got, bad) {
			t.Errorf("head %q has %q", got, bad)
		}
	}
}

// pair returns a connected TCP pair; the peer's bytes arrive on the channel
// when the connection closes.
func pair(t *testing.T) (net.Conn, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		peer, err := ln.Accept()
		if err != nil {
			got <- ""
			return
		}
		b, _ := io.ReadAll(peer)
		peer.Close()
		got <- string(b)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, got
}

func TestWrites(t *testing.T) {
	nc, got := pair(t)
	c := New(nc, func() {})
	if err := c.WriteBatch([][]byte{[]byte("a"), []byte("bc")}, time.Second); err != nil {
		t.Fatal(err)
	}
	if c.CanTryWrite() {
		rest, _, err := c.TryWrite([][]byte{[]byte("d"), nil, []byte("ef")}, nil)
		if err != nil || rest != nil {
			t.Fatalf("TryWrite: rest %q, err %v", rest, err)
		}
	} else if err := c.WriteBatch([][]byte{[]byte("def")}, time.Second); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s := <-got; s != "abcdef" {
		t.Fatalf("peer got %q", s)
	}
}
