package sse

import (
	"context"
	"net/http"
	"time"
)

// ExpireAt tells the TopicHandler serving r to end the stream at t: an
// on-connect hook calls it when the credentials that opened the stream
// stop being valid at t (a token's expiry). The stream then ends the way a
// dropped connection does; the client reconnects with fresh credentials
// and resumes from its last event id. A t in the past ends the stream as
// soon as it started; calling it again replaces the time.
//
// It reports whether r came from a handler that honours it: a
// TopicHandler's OnConnect hook. Elsewhere it does nothing and returns
// false. The stream ends within a few milliseconds of t (one timer per
// stream that has an expiry; streams without one cost nothing).
func ExpireAt(r *http.Request, t time.Time) bool {
	slot, ok := r.Context().Value(expiryKey{}).(*expirySlot)
	if !ok {
		return false
	}
	slot.at, slot.set = t, true
	return true
}

type expiryKey struct{}

// expirySlot receives the hook's ExpireAt. Only the request's goroutine
// touches it, before the stream starts.
type expirySlot struct {
	at  time.Time
	set bool
}

// withExpirySlot returns r with a slot for ExpireAt in its context.
func withExpirySlot(r *http.Request) (*http.Request, *expirySlot) {
	slot := new(expirySlot)
	return r.WithContext(context.WithValue(r.Context(), expiryKey{}, slot)), slot
}

// streamExpiry is a stream's expiry (ExpireAt): only streams that have one
// pay for it.
type streamExpiry struct {
	at    time.Time
	timer *time.Timer // fires at at (a parked stream's calls back instead)
}

// expiry returns the stream's expiry from the slot, with its timer
// started, or nil without one.
func (s *expirySlot) expiry() *streamExpiry {
	if s == nil || !s.set {
		return nil
	}
	return &streamExpiry{at: s.at, timer: time.NewTimer(time.Until(s.at))}
}

// expired returns the channel that fires when the stream's credentials
// expire; nil (never firing) without an expiry.
func (c *topicStream) expired() <-chan time.Time {
	if c.expiry == nil {
		return nil
	}
	return c.expiry.timer.C
}
