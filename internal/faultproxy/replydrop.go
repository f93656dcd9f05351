package faultproxy

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ReplyDropper is a TCP proxy in front of Redis that can lose the reply to
// an FCALL: once armed, the next data Redis sends on a connection that has
// carried an FCALL is not forwarded; the proxy closes both sides of that
// connection instead, after Redis ran the command, and disarms. Other
// connections (the broker's pub/sub connection never sends FCALL) are
// never affected.
type ReplyDropper struct {
	ln      net.Listener
	backend string
	armed   atomic.Bool
	dropped atomic.Int64 // replies lost so far

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// fcallCmd is how FCALL (and not FCALL_RO) appears in a RESP command: the
// command name as a bulk string, lower-cased (go-redis sends "fcall").
var fcallCmd = []byte("$5\r\nfcall\r\n")

// NewReplyDropper starts a proxy to backend, stopped (every goroutine
// ended) at cleanup. Register it before the clients that use it, so that
// they are closed first.
func NewReplyDropper(t testing.TB, backend string) *ReplyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &ReplyDropper{ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *ReplyDropper) Addr() string { return p.ln.Addr().String() }

// Arm makes the proxy lose the next reply to an FCALL.
func (p *ReplyDropper) Arm() { p.armed.Store(true) }

// track registers c; it reports false (and closes c) once the proxy is
// closed.
func (p *ReplyDropper) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *ReplyDropper) accept() {
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

func (p *ReplyDropper) serve(client net.Conn) {
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

// Dropped returns the number of replies lost so far.
func (p *ReplyDropper) Dropped() int64 { return p.dropped.Load() }

func (p *ReplyDropper) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
