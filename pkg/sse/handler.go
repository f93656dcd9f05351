package sse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"
)

// StreamFunc produces the events of one stream. It runs in its own
// goroutine while the handler goroutine writes what it sends; ctx is the
// request's context, cancelled when the client goes away, when a write
// fails, or when the handler drains. The stream ends when StreamFunc
// returns (a non-nil error is logged).
type StreamFunc func(ctx context.Context, s *Stream) error

// ErrStreamClosed is returned by Stream methods once the stream has ended.
var ErrStreamClosed = errors.New("sse: stream closed")

// Stream is the writing side of one connection, given to a StreamFunc.
// Send and Comment are safe for concurrent use.
type Stream struct {
	r      *http.Request
	lastID string
	frames chan []byte
	ctx    context.Context
}

// Request returns the request that opened the stream.
func (s *Stream) Request() *http.Request { return s.r }

// LastEventID returns the client's resume position: the Last-Event-ID
// header, or on a first connection the lastEventId query parameter; ""
// if neither is set.
func (s *Stream) LastEventID() string { return s.lastID }

// Send encodes e and queues it for writing. It blocks while the
// connection's queue is full (back-pressure from a slow client, bounded by
// the write timeout) and fails with ErrStreamClosed once the stream ended.
// An invalid event (CR, LF or NUL in ID or Type) is refused with
// ErrInvalidID or ErrInvalidType and nothing is written.
func (s *Stream) Send(e Event) error {
	b, err := AppendEvent(nil, &e)
	if err != nil {
		return err
	}
	return s.queue(b)
}

// Comment queues a comment (": text"); clients ignore it.
func (s *Stream) Comment(text string) error {
	return s.queue(AppendComment(nil, text))
}

func (s *Stream) queue(b []byte) error {
	if s.ctx.Err() != nil {
		return ErrStreamClosed
	}
	select {
	case s.frames <- b:
		return nil
	case <-s.ctx.Done():
		return ErrStreamClosed
	}
}

// Handler serves one stream per request from a StreamFunc. The zero value
// is not usable: set Stream (or use Serve). Configure it before the first
// request; it is safe for concurrent use afterwards.
type Handler struct {
	// Stream produces the events. Required.
	Stream StreamFunc
	// OnConnect runs first and decides status and headers; nil means
	// DefaultOnConnect.
	OnConnect OnConnect
	// Heartbeat is the interval of the comment that keeps idle streams
	// open through proxies; 0 means DefaultHeartbeat (15s), negative
	// disables heartbeats.
	Heartbeat time.Duration
	// WriteTimeout bounds each write to the client; a client that does not
	// take the bytes in time is disconnected. 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// QueueSize is how many sent-but-unwritten frames a stream holds before
	// Send blocks; 0 means 16.
	QueueSize int
	// MaxConnections caps concurrent streams; more get 503 with
	// Retry-After. 0 means no cap.
	MaxConnections int
	// Logger receives stream errors; nil means slog.Default().
	Logger *slog.Logger

	lc lifecycle
}

// Serve returns a Handler for stream with the on-connect hook onConnect
// (nil for DefaultOnConnect) and default settings.
func Serve(stream StreamFunc, onConnect OnConnect) *Handler {
	return &Handler{Stream: stream, OnConnect: onConnect}
}

// Drain makes the handler refuse new streams (503), tells every open
// stream's client to reconnect after about retry (jittered between half
// and one and a half times it; 0 sends no hint), ends the streams, and
// waits until they have all ended or ctx is done. Draining is final for
// this Handler.
//
// http.Server.Shutdown alone also ends the streams that server serves,
// without a hint (the handler registers with the server's
// RegisterOnShutdown on its first stream); call Drain first to give the
// clients one, and to end the streams of every server at once.
func (h *Handler) Drain(ctx context.Context, retry time.Duration) error {
	h.lc.init(h.Heartbeat)
	return h.lc.drain(ctx, retry)
}

// Connections returns the number of open streams.
func (h *Handler) Connections() int { return int(h.lc.active.Load()) }

func (h *Handler) logger() *slog.Logger {
	if h.Logger != nil {
		return h.Logger
	}
	return slog.Default()
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.lc.init(h.Heartbeat)
	lastID := lastEventID(r)
	if len(lastID) > DefaultMaxCursorLen || strings.ContainsAny(lastID, "\x00\r\n") {
		http.Error(w, "Last-Event-ID is too long or contains CR, LF or NUL", http.StatusBadRequest)
		return
	}
	shutdown := h.lc.shutdownOf(r)
	if !h.lc.admit(w, h.MaxConnections, shutdown) {
		return
	}
	defer h.lc.release()
	if !connect(w, r, h.OnConnect) {
		return
	}
	cw := &responseSink{w: w, rc: http.NewResponseController(w)}
	timeout := h.WriteTimeout
	if timeout == 0 {
		timeout = DefaultWriteTimeout
	}
	w.WriteHeader(http.StatusOK)
	if err := cw.flush(nil, timeout); err != nil {
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	qs := h.QueueSize
	if qs <= 0 {
		qs = 16
	}
	s := &Stream{r: r, lastID: lastID, frames: make(chan []byte, qs), ctx: ctx}
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("sse: stream function panicked: %v\n%s", p, debug.Stack())
			}
		}()
		done <- h.Stream(ctx, s)
	}()

	slot := h.lc.joinHeartbeat()
	defer h.lc.leaveHeartbeat()
	var batch [][]byte
	var streamErr error
	finished := false
	for !finished {
		select {
		case b := <-s.frames:
			batch = append(batch[:0], b)
			for len(batch) < cap(s.frames) {
				select {
				case b = <-s.frames:
					batch = append(batch, b)
					continue
				default:
				}
				break
			}
			if cw.flush(batch, timeout) != nil {
				finished = true
			}
		case streamErr = <-done:
			// Write what the function queued before it returned.
			batch = batch[:0]
			for len(s.frames) > 0 {
				batch = append(batch, <-s.frames)
			}
			_ = cw.flush(batch, timeout)
			cancel()
			if streamErr != nil && !errors.Is(streamErr, context.Canceled) && !errors.Is(streamErr, ErrStreamClosed) {
				h.logger().Warn("sse: stream ended with an error", "path", r.URL.Path, "err", streamErr)
			}
			return
		case <-h.lc.heartbeat(slot):
			if cw.flush([][]byte{heartbeatFrame}, timeout) != nil {
				finished = true
			}
		case <-h.lc.drainCh:
			_ = cw.flush([][]byte{appendRetryHint(nil, h.lc.drainRetry())}, timeout)
			finished = true
		case <-shutdown:
			finished = true
		case <-ctx.Done():
			finished = true
		}
	}
	// The client is gone or the stream is being drained: stop the stream
	// function and wait for it, so nothing is left running.
	cancel()
	streamErr = <-done
	if streamErr != nil && !errors.Is(streamErr, context.Canceled) && !errors.Is(streamErr, ErrStreamClosed) {
		h.logger().Warn("sse: stream ended with an error", "path", r.URL.Path, "err", streamErr)
	}
}

// lastEventID returns the resume position of a request: the Last-Event-ID
// header, or else the lastEventId query parameter (a first connection
// cannot set the header from a browser).
func lastEventID(r *http.Request) string {
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		return v
	}
	return r.URL.Query().Get("lastEventId")
}
