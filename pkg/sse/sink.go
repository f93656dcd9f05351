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
}

type responseSink struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *responseSink) flush(bufs [][]byte, timeout time.Duration) error {
	// A fresh deadline per batch also overrides a server-wide WriteTimeout
	// that would otherwise cut long streams. ErrNotSupported is not fatal.
	_ = s.rc.SetWriteDeadline(time.Now().Add(timeout))
	for _, b := range bufs {
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
