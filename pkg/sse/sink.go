package sse

import (
	"net/http"
	"time"

	"github.com/herald-sse/herald/pkg/sse/internal/rawconn"
)

// sink is where a stream's bytes go: a hijacked connection or a
// ResponseWriter.
type sink interface {
	// flush writes bufs (which it may clobber) and pushes them to the
	// client within timeout.
	flush(bufs [][]byte, timeout time.Duration) error
	// remoteAddr is the client's address, for logs.
	remoteAddr() string
}

// responseSink is a ResponseWriter: a TopicHandler's stream without
// Hijack, or a Handler's. Only the stream's writer uses it.
type responseSink struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	remote string // the request's RemoteAddr
}

func (s *responseSink) remoteAddr() string { return s.remote }

// flush writes bufs and flushes, under a fresh write deadline of timeout
// (none if timeout is negative).
func (s *responseSink) flush(bufs [][]byte, timeout time.Duration) error {
	// A fresh deadline per batch also overrides a server-wide WriteTimeout
	// that would otherwise cut long streams. ErrNotSupported from a writer
	// that cannot set deadlines is not fatal: the write has none.
	if timeout > 0 {
		_ = s.rc.SetWriteDeadline(time.Now().Add(timeout))
	}
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if _, err := s.w.Write(b); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// connSink is a hijacked connection.
type connSink struct{ *rawconn.Conn }

func (s connSink) flush(bufs [][]byte, timeout time.Duration) error {
	return s.WriteBatch(bufs, timeout)
}

func (s connSink) remoteAddr() string { return s.RemoteAddr() }

// writeHead writes the response head. Where it can, it tries a
// non-blocking write first, which a fresh connection's empty socket buffer
// takes whole: a blocking write would leave a write-deadline timer and an
// iovec array on the connection for as long as it is open, and an idle
// stream may never write again from its own goroutine.
func (s connSink) writeHead(head []byte, timeout time.Duration) error {
	if s.CanTryWrite() {
		rest, _, err := s.TryWrite([][]byte{head}, nil)
		if err != nil || rest == nil {
			return err
		}
		head = rest
	}
	return s.WriteBatch([][]byte{head}, timeout)
}
