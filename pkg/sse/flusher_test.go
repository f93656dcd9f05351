package sse

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokerutil"
	"github.com/herald-sse/herald/pkg/sse/internal/rawconn"
)

// newFlushConn is a stream on a real TCP connection whose peer counts what
// arrives (sent on the channel when the connection closes), with a
// subscription of the given limit that the test pushes to.
func newFlushConn(t testing.TB, limit int) (*topicStream, *brokerutil.Sub, <-chan int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan int64, 1)
	go func() {
		peer, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, peer)
		peer.Close()
		got <- n
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw := rawconn.New(conn, func() {})
	if !raw.CanTryWrite() {
		t.Skip("no flusher writes on this platform")
	}
	sub := brokerutil.NewSub(limit, nil)
	c := &topicStream{
		h: &TopicHandler{}, sub: sub, out: connSink{raw},
		topics: []string{"a"}, pos: []string{"e-0"}, timeout: time.Second,
		notifier: sub,
	}
	t.Cleanup(func() { raw.Close() })
	return c, sub, got
}

func drainReady(sub *brokerutil.Sub) bool {
	select {
	case <-sub.Ready():
		return true
	default:
		return false
	}
}

// A flusher never writes while the stream's goroutine is writing: it
// leaves the items queued and signals the goroutine, which takes them after
// its own write, in order.
func TestFlushLeavesBusyStreamToItsGoroutine(t *testing.T) {
	c, sub, got := newFlushConn(t, 16)
	sub.Push(&broker.Event{Kind: broker.KindEvent, Topic: "a", ID: "e-1", Data: "x"})
	drainReady(sub)
	c.busy = true // the goroutine is writing
	c.flush()
	if !drainReady(sub) {
		t.Fatal("the flusher did not hand the item to the stream's goroutine")
	}
	items, err := sub.Take(nil)
	if err != nil || len(items) != 1 {
		t.Fatalf("the flusher took the item of a busy stream: %d left, %v", len(items), err)
	}
	c.out.(connSink).Close()
	if n := <-got; n != 0 {
		t.Fatalf("the flusher wrote %d bytes to a busy stream", n)
	}
}

// The goroutine waits for a flusher's write in progress before it writes.
func TestOwnWaitsForFlusherWrite(t *testing.T) {
	c, _, _ := newFlushConn(t, 16)
	c.busy = true // a flusher is writing
	done := make(chan struct{})
	go func() {
		c.own()
		c.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("own returned while a flusher was writing")
	case <-time.After(50 * time.Millisecond):
	}
	c.release()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("own did not return after the flusher's write")
	}
	if !c.busy {
		t.Fatal("own did not make the goroutine the writer")
	}
}

// A flusher writes an idle stream's items itself, without waking its
// goroutine, and leaves what the socket did not take for the goroutine.
func TestFlushWritesIdleStream(t *testing.T) {
	c, sub, got := newFlushConn(t, 16)
	ev := &broker.Event{Kind: broker.KindEvent, Topic: "a", ID: "e-1", Data: "hello"}
	sub.Push(ev)
	drainReady(sub)
	c.flush()
	if drainReady(sub) {
		t.Fatal("the flusher woke the goroutine of an idle stream")
	}
	if c.busy || c.pending != nil || c.werr != nil {
		t.Fatalf("state after a complete write: busy %v, pending %d bytes, err %v", c.busy, len(c.pending), c.werr)
	}
	c.out.(connSink).Close()
	if n, want := <-got, int64(len(ev.Memo(encodeBrokerEvent))); n != want {
		t.Fatalf("peer got %d bytes, want %d", n, want)
	}
}
