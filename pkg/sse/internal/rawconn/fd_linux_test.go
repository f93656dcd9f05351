//go:build linux

package rawconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a TCP connection, the server end small
// buffered so that a peer that does not read fills it quickly.
func tcpPair(t *testing.T) (server, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-acc
	if server == nil {
		t.Fatal("accept failed")
	}
	_ = server.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_ = peer.(*net.TCPConn).SetReadBuffer(16 << 10)
	t.Cleanup(func() { peer.Close(); server.Close() })
	return server, peer
}

// A TCP connection is taken over as a bare descriptor: the net.Conn is
// closed (its Go state freed), the socket stays open, and writes, the
// peer's address and Close work on the descriptor.
func TestDescriptorMode(t *testing.T) {
	server, peer := tcpPair(t)
	want := peer.LocalAddr().String()
	c := New(server, func() {})
	if c.nc != nil || c.fd < 0 {
		t.Fatal("a TCP connection was not taken over as a descriptor")
	}
	if _, err := server.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the net.Conn still writes after the take-over: %v", err)
	}
	if got := c.RemoteAddr(); got != want {
		t.Fatalf("RemoteAddr = %q, want %q", got, want)
	}
	if err := c.WriteBatch([][]byte{[]byte("ab"), nil, []byte("c")}, time.Second); err != nil {
		t.Fatal(err)
	}
	if rest, _, err := c.TryWrite([][]byte{[]byte("de")}, nil); err != nil || rest != nil {
		t.Fatalf("TryWrite: rest %q, err %v", rest, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.TryWrite([][]byte{[]byte("late")}, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryWrite after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	b, _ := io.ReadAll(peer)
	if string(b) != "abcde" {
		t.Fatalf("peer got %q", b)
	}
}

// A write the socket cannot take at once waits for room (EPOLLOUT through
// netwatch) and then goes through whole and in order; one that gets no
// room within its timeout fails with os.ErrDeadlineExceeded; TryWrite
// meanwhile returns what the socket did not take.
func TestDescriptorWriteWaits(t *testing.T) {
	server, peer := tcpPair(t)
	c := New(server, func() {})
	defer c.Close()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: far more than the buffers
	if err := c.WriteBatch([][]byte{big}, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that does not read: %v, want os.ErrDeadlineExceeded", err)
	}
	rest, _, err := c.TryWrite([][]byte{[]byte("more")}, nil)
	if err != nil || string(rest) != "more" {
		t.Fatalf("TryWrite on a full socket: rest %q, err %v", rest, err)
	}

	// Now the peer reads (what the timed-out write left, then the rest).
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	tail := []byte("the end")
	if err := c.WriteBatch([][]byte{big, tail}, 10*time.Second); err != nil {
		t.Fatalf("write to a peer that reads: %v", err)
	}
	c.Close()
	b := <-got
	if !bytes.HasSuffix(b, append(append([]byte{}, big...), tail...)) {
		t.Fatalf("peer got %d bytes, not ending with the whole second write", len(b))
	}
}

// The peer leaving calls gone, and a blocked write returns instead of
// waiting out its timeout.
func TestDescriptorPeerGone(t *testing.T) {
	server, peer := tcpPair(t)
	gone := make(chan struct{})
	c := New(server, func() { close(gone) })
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		big := bytes.Repeat([]byte("x"), 8<<20)
		errc <- c.WriteBatch([][]byte{big}, time.Minute)
	}()
	time.Sleep(100 * time.Millisecond)
	_ = peer.(*net.TCPConn).SetLinger(0)
	peer.Close() // a reset
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("gone was not called")
	}
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("a write to a peer that reset succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write blocked on a departed peer did not return")
	}
}
