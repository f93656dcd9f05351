// Package rawconn is pkg/sse's output to a hijacked HTTP/1.x connection
// (TopicHandler.Hijack): the response head it writes itself, batches
// written with one writev under a write deadline that moves lazily, and,
// on Linux, non-blocking writev(2) calls for the flushers that write live
// events to idle streams.
package rawconn

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/herald-sse/herald/pkg/sse/internal/netwatch"
)

// Conn is one hijacked connection. Write and TryWrite must not be called
// concurrently (the stream's writer-ownership protocol sees to that); Close
// may be called while a TryWrite runs, and waits for it.
//
// On Linux a TCP or Unix connection is taken over as a bare descriptor:
// New duplicates its descriptor and closes the net.Conn, which frees Go's
// state for it (the net.Conn, its addresses and the poller's descriptor,
// about 1 KB); writes are writev(2) calls, a write that would block waits
// for EPOLLOUT through netwatch (which also notices the peer leaving), and
// an idle connection costs this struct and its netwatch entry. Elsewhere,
// and for connections without a descriptor of their own (TLS, wrappers),
// Conn keeps the net.Conn.
type Conn struct {
	mu     sync.Mutex // descriptor mode: held around each write and by Close
	closed bool       // descriptor mode: fd is closed (guarded by mu)
	fd     int        // descriptor mode: the socket; -1 in connection mode
	watch  netwatch.FD
	nc     *netConn // connection mode
}

// netConn is a Conn that keeps its net.Conn.
type netConn struct {
	conn  net.Conn
	raw   *rawWriter // non-blocking writes; nil: none
	armed time.Time  // the write deadline currently set on conn
	stop  func()     // ends netwatch's watch
}

// New takes c over as a stream's output and has gone called (once, from
// another goroutine) when its peer closes or resets it (netwatch). gone
// must not block, nor call Close.
func New(c net.Conn, gone func()) *Conn {
	if fd, w, ok := takeFD(c, gone); ok {
		return &Conn{fd: fd, watch: w}
	}
	return &Conn{fd: -1, nc: &netConn{conn: c, raw: newRawWriter(c), stop: netwatch.Default.Watch(c, gone)}}
}

// Close ends the watch and closes the connection.
func (c *Conn) Close() error {
	if c.nc != nil {
		c.nc.stop()
		return c.nc.conn.Close()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed // and the descriptor number may be another's now
	}
	c.closed = true // no write is in progress, and none starts
	c.mu.Unlock()
	c.watch.Stop()
	return closeFD(c.fd)
}

// RemoteAddr is the peer's address, for logs.
func (c *Conn) RemoteAddr() string {
	if c.nc != nil {
		return c.nc.conn.RemoteAddr().String()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ""
	}
	return peerAddr(c.fd)
}

// CanTryWrite reports whether TryWrite can write: Linux, and a connection
// with a file descriptor of its own (TCP or Unix, not TLS or a wrapper).
func (c *Conn) CanTryWrite() bool { return c.nc == nil || c.nc.raw != nil }

// WriteBatch writes bufs (which it may clobber), waiting for the socket up
// to timeout.
func (c *Conn) WriteBatch(bufs [][]byte, timeout time.Duration) error {
	if len(bufs) == 0 {
		return nil
	}
	if c.nc == nil {
		return c.writeFD(bufs, timeout)
	}
	// Moving a deadline costs a runtime timer update: re-arm it only when
	// less than half the timeout is left, so a busy stream touches its
	// timer at most twice per timeout and every write still gets at least
	// half of it.
	nc := c.nc
	if now := time.Now(); nc.armed.Sub(now) < timeout/2 {
		nc.armed = now.Add(timeout)
		if err := nc.conn.SetWriteDeadline(nc.armed); err != nil {
			return err
		}
	}
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(nc.conn)
	return err
}

// TryWrite writes bufs with one non-blocking writev, without waiting for
// the socket. It returns a copy of what the socket did not take now (nil
// when it took everything), or the error of the write. iov is scratch
// space, returned for reuse. Call it only when CanTryWrite.
func (c *Conn) TryWrite(bufs [][]byte, iov Iovecs) (rest []byte, _ Iovecs, err error) {
	var n int
	attempted := true
	if c.nc == nil {
		n, iov, err = c.tryWriteFD(bufs, iov)
	} else {
		n, attempted, iov, err = c.nc.raw.tryWritev(bufs, iov)
	}
	if err != nil {
		return nil, iov, err
	}
	total := 0
	for _, p := range bufs {
		total += len(p)
	}
	if attempted && n == total {
		return nil, iov, nil
	}
	rest = make([]byte, 0, total-n)
	for _, p := range bufs {
		if n >= len(p) {
			n -= len(p)
			continue
		}
		rest = append(rest, p[n:]...)
		n = 0
	}
	return rest, iov, nil
}

// Head is the status line and headers of a stream on a hijacked
// connection: 200, hdr without the framing headers (no chunked encoding:
// the body ends when the connection closes), a Date, and Connection: close.
// Header keys and values that would break the head are left out.
func Head(hdr http.Header) []byte {
	b := make([]byte, 0, 256)
	b = append(b, "HTTP/1.1 200 OK\r\n"...)
	for k, vs := range hdr {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Content-Length", "Transfer-Encoding", "Keep-Alive":
			continue
		}
		if !validHeaderKey(k) {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n\x00") {
				continue
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, v...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	return append(b, "\r\nConnection: close\r\n\r\n"...)
}

func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}
