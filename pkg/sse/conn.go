package sse

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults shared by Handler and TopicHandler.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// OnConnect decides whether a request may open a stream, and with which
// status and headers. It runs before anything is written.
//
// Status 200 opens the stream: the returned headers are sent, and the SSE
// essentials (Content-Type: text/event-stream, Cache-Control: no-store,
// X-Accel-Buffering: no) are added where the hook left them out. Any other
// status is sent as a plain HTTP response and the stream never starts; for
// 4xx the body is err's text (or the status text), for 5xx the status text
// (err is not shown to the client). A status of 0 means 200 when err is nil
// and 500 otherwise. 204 No Content tells an EventSource to stop
// reconnecting.
type OnConnect func(r *http.Request) (status int, h http.Header, err error)

// DefaultOnConnect accepts every request: 200 with the SSE headers.
func DefaultOnConnect(*http.Request) (int, http.Header, error) {
	h := make(http.Header, 3)
	setStreamHeaders(h)
	return http.StatusOK, h, nil
}

func setStreamHeaders(h http.Header) {
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
	}
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	if h.Get("X-Accel-Buffering") == "" {
		h.Set("X-Accel-Buffering", "no")
	}
}

// connect runs the hook and, unless it opens the stream, answers the
// request. It reports whether the stream may start.
func connect(w http.ResponseWriter, r *http.Request, hook OnConnect) bool {
	if hook == nil {
		hook = DefaultOnConnect
	}
	status, hdr, err := hook(r)
	if status == 0 {
		status = http.StatusOK
		if err != nil {
			status = http.StatusInternalServerError
		}
	}
	dst := w.Header()
	for k, v := range hdr {
		dst[k] = v
	}
	if status == http.StatusOK {
		setStreamHeaders(dst)
		dst.Del("Content-Length")
		return true
	}
	if status == http.StatusNoContent || status == http.StatusNotModified || status < 200 {
		w.WriteHeader(status)
		return false
	}
	msg := http.StatusText(status)
	if err != nil && status < 500 {
		msg = err.Error()
	}
	dst.Del("Content-Length")
	dst.Set("Content-Type", "text/plain; charset=utf-8")
	dst.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
	return false
}

// lifecycle is what Handler and TopicHandler share: the connection count
// and cap, draining, and the heartbeat timer.
type lifecycle struct {
	once    sync.Once
	hb      *heartbeats
	drainCh chan struct{} // closed when draining starts
	active  atomic.Int64
	// idle is signalled (non-blocking) whenever a stream ends, for Drain.
	idle chan struct{}

	mu       sync.Mutex // guards draining, retry and servers
	draining bool
	retry    time.Duration
	// servers holds, for each http.Server that served a stream, the
	// channel its Shutdown closes (see shutdownOf).
	servers map[*http.Server]chan struct{}

	park [heartbeatSlots]parkSlot // parked streams (park.go), by heartbeat slot
}

func (l *lifecycle) init(heartbeat time.Duration) {
	l.once.Do(func() {
		if heartbeat == 0 {
			heartbeat = DefaultHeartbeat
		}
		if heartbeat > 0 {
			l.hb = newHeartbeats(heartbeat)
			l.hb.onTick = l.heartbeatParked
		}
		l.drainCh = make(chan struct{})
		l.idle = make(chan struct{}, 1)
	})
}

// shutdownOf returns a channel that is closed when the http.Server serving
// r shuts down, or nil (never closed) when r does not tell its server
// (http.ServerContextKey). The first stream of each server registers with
// its RegisterOnShutdown.
func (l *lifecycle) shutdownOf(r *http.Request) <-chan struct{} {
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil {
		return nil
	}
	l.mu.Lock()
	ch, ok := l.servers[srv]
	if !ok {
		if l.servers == nil {
			l.servers = make(map[*http.Server]chan struct{})
		}
		ch = make(chan struct{})
		l.servers[srv] = ch
	}
	l.mu.Unlock()
	if !ok {
		srv.RegisterOnShutdown(func() { close(ch) })
	}
	return ch
}

// admit reserves a connection slot. It answers the request itself (503 +
// Retry-After) and returns false when the handler is draining, at its
// connection cap, or its server is shutting down (shutdown closed).
func (l *lifecycle) admit(w http.ResponseWriter, max int, shutdown <-chan struct{}) bool {
	n := l.active.Add(1)
	l.mu.Lock()
	draining := l.draining
	l.mu.Unlock()
	select {
	case <-shutdown:
		draining = true
	default:
	}
	if draining || (max > 0 && n > int64(max)) {
		l.release()
		msg := "too many connections, retry later"
		if draining {
			msg = "server is shutting down, reconnect to another replica"
		}
		w.Header().Set("Retry-After", "1")
		http.Error(w, msg, http.StatusServiceUnavailable)
		return false
	}
	return true
}

func (l *lifecycle) release() {
	l.active.Add(-1)
	select {
	case l.idle <- struct{}{}:
	default:
	}
}

// heartbeat returns the channel that fires at this connection's next
// heartbeat (nil, never firing, when heartbeats are off).
func (l *lifecycle) heartbeat(slot int) <-chan struct{} {
	if l.hb == nil {
		return nil
	}
	return l.hb.wait(slot)
}

func (l *lifecycle) joinHeartbeat() int {
	if l.hb == nil {
		return 0
	}
	return l.hb.join()
}

func (l *lifecycle) leaveHeartbeat() {
	if l.hb != nil {
		l.hb.leave()
	}
}

// drainRetry returns the jittered reconnection delay a drained stream tells
// its client: between half and one and a half times the configured retry,
// so clients of a drained replica do not reconnect in the same millisecond.
func (l *lifecycle) drainRetry() time.Duration {
	l.mu.Lock()
	r := l.retry
	l.mu.Unlock()
	if r <= 0 {
		return 0
	}
	return r/2 + rand.N(r+1)
}

// drain stops admitting streams, tells every open stream to send a retry
// hint and end, and waits until all ended or ctx is done.
func (l *lifecycle) drain(ctx context.Context, retry time.Duration) error {
	l.mu.Lock()
	if !l.draining {
		l.draining = true
		l.retry = retry
		close(l.drainCh)
	}
	l.mu.Unlock()
	l.kickParked() // parked streams do not watch drainCh
	for l.active.Load() > 0 {
		select {
		case <-l.idle:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
			// admit may have reserved and released a slot without a stream.
		}
	}
	return nil
}

func appendRetryHint(dst []byte, d time.Duration) []byte {
	if d <= 0 {
		return dst
	}
	return AppendRetry(dst, d)
}
