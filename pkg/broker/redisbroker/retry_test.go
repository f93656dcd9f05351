package redisbroker

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
)

// replyDropper is a TCP proxy in front of Redis that can lose the reply to
// an FCALL: once armed, the next data Redis sends on a connection that has
// carried an FCALL is not forwarded; the proxy closes both sides of that
// connection instead, after Redis ran the command, and disarms. Other
// connections (the broker's pub/sub connection never sends FCALL) are
// never affected.
type replyDropper struct {
	ln      net.Listener
	backend string
	armed   atomic.Bool
	dropped atomic.Int64

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// fcallCmd is how FCALL (and not FCALL_RO) appears in a RESP command: the
// command name as a bulk string, lower-cased (go-redis sends "fcall").
var fcallCmd = []byte("$5\r\nfcall\r\n")

// startReplyDropper starts a proxy to backend, stopped (every goroutine
// ended) at cleanup. Register it before the clients that use it, so that
// they are closed first.
func startReplyDropper(t testing.TB, backend string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &replyDropper{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *replyDropper) addr() string { return p.ln.Addr().String() }

// arm makes the proxy lose the next reply to an FCALL.
func (p *replyDropper) arm() { p.armed.Store(true) }

// track registers c; it reports false (and closes c) once the proxy is
// closed.
func (p *replyDropper) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *replyDropper) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Go(func() { p.serve(client) })
	}
}

func (p *replyDropper) serve(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.backend, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(server) {
		client.Close()
		return
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			server.Close()
		})
	}
	var publisher atomic.Bool // the client has sent an FCALL on this connection

	// Client to Redis: mark the connection before forwarding its FCALL,
	// hence before Redis can reply to it.
	p.wg.Go(func() {
		defer closeBoth()
		buf := make([]byte, 32<<10)
		var tail []byte // end of the previous read, for a name split across reads
		for {
			n, err := client.Read(buf)
			if n > 0 {
				if !publisher.Load() {
					if bytes.Contains(bytes.ToLower(append(tail, buf[:n]...)), fcallCmd) {
						publisher.Store(true)
					}
					tail = append(tail[:0], buf[max(0, n-len(fcallCmd)+1):n]...)
				}
				if _, err := server.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	// Redis to client: lose the reply when armed.
	p.wg.Go(func() {
		defer closeBoth()
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 {
				if publisher.Load() && p.armed.CompareAndSwap(true, false) {
					p.dropped.Add(1)
					return // closes both sides
				}
				if _, err := client.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

func (p *replyDropper) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// A publish whose reply is lost after Redis ran the FCALL must fail, not be
// sent again: go-redis retries a command after an EOF or reset while
// reading its reply (3 times by default), and a second FCALL appends the
// event a second time, under a second ID, for every subscriber.
func TestPublishLostReplyNotRetried(t *testing.T) {
	r := testredis.Start(t)
	p := startReplyDropper(t, r.Addr)
	prefix := "lostreply"
	b := newBroker(t, r, Config{
		URL:    "redis://" + p.addr() + "/0?dial_timeout=1s&read_timeout=1s&write_timeout=1s",
		Prefix: prefix,
		Logger: warnLogger(),
	})
	topic := uniqueTopic("lostreply")

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if _, err := b.Publish(ctx, topic, broker.Message{Data: "warm-up"}); err != nil {
		t.Fatalf("warm-up Publish: %v", err)
	}

	p.arm()
	id, err := b.Publish(ctx, topic, broker.Message{Data: "reply lost"})
	if got := p.dropped.Load(); got != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", got)
	}
	if err == nil {
		t.Errorf("Publish whose reply was lost returned %q and no error: it was sent again", id)
	} else if !errors.Is(err, broker.ErrUnavailable) {
		t.Errorf("Publish whose reply was lost: %v, want an error wrapping broker.ErrUnavailable", err)
	} else {
		t.Logf("Publish whose reply was lost: %v", err)
	}

	// Read from Redis directly, not through the proxy.
	key := prefix + ":{" + topic + "}:s"
	n, err := r.Client(t).XLen(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("XLEN %s: %v", key, err)
	}
	if n != 2 {
		t.Errorf("stream %s has %d entries, want 2 (the warm-up and the event whose reply was lost): the lost-reply FCALL was retried", key, n)
	}
}
