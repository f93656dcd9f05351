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
	"time"
)

// Conn is one hijacked connection. Write and TryWrite must not be called
// concurrently (the stream's writer-ownership protocol sees to that).
type Conn struct {
	conn  net.Conn
	raw   *rawWriter // non-blocking writes; nil: none
	armed time.Time  // the write deadline currently set on conn
}

// New returns c as a stream's output.
func New(c net.Conn) *Conn { return &Conn{conn: c, raw: newRawWriter(c)} }

// NetConn returns the connection New was given.
func (c *Conn) NetConn() net.Conn { return c.conn }

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// CanTryWrite reports whether TryWrite can write: Linux, and a connection
// with a file descriptor of its own (TCP or Unix, not TLS or a wrapper).
func (c *Conn) CanTryWrite() bool { return c.raw != nil }

// WriteBatch writes bufs (which it may clobber) with one writev, waiting
// for the socket up to timeout.
func (c *Conn) WriteBatch(bufs [][]byte, timeout time.Duration) error {
	if len(bufs) == 0 {
		return nil
	}
	// Moving a deadline costs a runtime timer update: re-arm it only when
	// less than half the timeout is left, so a busy stream touches its
	// timer at most twice per timeout and every write still gets at least
	// half of it.
	if now := time.Now(); c.armed.Sub(now) < timeout/2 {
		c.armed = now.Add(timeout)
		if err := c.conn.SetWriteDeadline(c.armed); err != nil {
			return err
		}
	}
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(c.conn)
	return err
}

// TryWrite writes bufs with one non-blocking writev, without waiting for
// the socket. It returns a copy of what the socket did not take now (nil
// when it took everything), or the error of the write. iov is scratch
// space, returned for reuse. Call it only when CanTryWrite.
func (c *Conn) TryWrite(bufs [][]byte, iov Iovecs) (rest []byte, _ Iovecs, err error) {
	n, attempted, iov, err := c.raw.tryWritev(bufs, iov)
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
