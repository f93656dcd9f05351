package faultproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Every toxiproxy goroutine ends once the test's proxies are stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes every line back until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, d Dialer, addr string) *client {
	t.Helper()
	c, err := d(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReader(c)}
}

func plainDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// roundTrip writes a line and reads the echo within timeout.
func (c *client) roundTrip(line string, timeout time.Duration) error {
	c.c.SetDeadline(time.Now().Add(timeout))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return errors.New("echo mismatch: " + got)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyBlackholeAndClear(t *testing.T) {
	p := New(t, echoServer(t))
	if p.Addr() == "" || p.Upstream() == "" {
		t.Fatalf("addresses: %q -> %q", p.Addr(), p.Upstream())
	}
	c := dial(t, plainDial, p.Addr())
	if err := c.roundTrip("hello", 5*time.Second); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	if err := p.Blackhole(); err != nil {
		t.Fatal(err)
	}
	// Writes succeed, nothing comes back, nothing is closed.
	if err := c.roundTrip("lost", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("blackholed round trip: got %v, want a timeout", err)
	}
	// A new connection through the same proxy is blackholed too.
	c2 := dial(t, plainDial, p.Addr())
	if err := c2.roundTrip("lost", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection through a blackholed proxy: got %v, want a timeout", err)
	}
	p.Clear()
	c3 := dial(t, plainDial, p.Addr())
	if err := c3.roundTrip("back", 5*time.Second); err != nil {
		t.Fatalf("after Clear: %v", err)
	}
	if err := p.RemoveToxic("nope"); err == nil {
		t.Fatal("RemoveToxic of a missing toxic: no error")
	}
}

func TestProxyToxicAndCloseConnections(t *testing.T) {
	p := New(t, echoServer(t))
	if err := p.AddToxic("slow", "latency", Downstream, map[string]any{"latency": 200}); err != nil {
		t.Fatal(err)
	}
	if err := p.AddToxic("slow", "latency", Downstream, map[string]any{"latency": 200}); err == nil {
		t.Fatal("a second toxic with the same name: no error")
	}
	c := dial(t, plainDial, p.Addr())
	start := time.Now()
	if err := c.roundTrip("slow", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("latency toxic: round trip took %v", d)
	}
	if err := p.RemoveToxic("slow"); err != nil {
		t.Fatal(err)
	}
	if err := p.CloseConnections(); err != nil {
		t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && err == nil {
		t.Fatalf("read after CloseConnections: %v", err)
	}
	c2 := dial(t, plainDial, p.Addr())
	if err := c2.roundTrip("again", 5*time.Second); err != nil {
		t.Fatalf("new connection after CloseConnections: %v", err)
	}
}

func TestSwitchFlip(t *testing.T) {
	sw := NewSwitch(t, echoServer(t))
	var dials int
	var mu sync.Mutex
	sw.WithBase(func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dials++
		mu.Unlock()
		return plainDial(ctx, network, addr)
	})
	first := sw.Current()
	old := dial(t, sw.Dial, "ignored:1")
	if err := old.roundTrip("a", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := sw.Flip(); err != nil {
		t.Fatal(err)
	}
	if sw.Current() == first || sw.Flips() != 1 {
		t.Fatalf("after Flip: same proxy current or Flips=%d", sw.Flips())
	}
	if err := old.roundTrip("b", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("connection open before Flip: got %v, want a timeout (blackholed)", err)
	}
	fresh := dial(t, sw.Dial, "ignored:1")
	if err := fresh.roundTrip("c", 5*time.Second); err != nil {
		t.Fatalf("connection opened after Flip: %v", err)
	}
	// Flipping back blackholes the second path and revives the first for
	// new connections only.
	if err := sw.Flip(); err != nil {
		t.Fatal(err)
	}
	if err := fresh.roundTrip("d", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("after the second Flip: got %v, want a timeout", err)
	}
	again := dial(t, sw.Dial, "ignored:1")
	if err := again.roundTrip("e", 5*time.Second); err != nil {
		t.Fatalf("connection opened after the second Flip: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if dials != 3 {
		t.Fatalf("base dialer used %d times, want 3", dials)
	}
}
