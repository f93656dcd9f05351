package sse

import (
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// Metrics receives a TopicHandler's events, for counters and histograms.
// Every field is optional: a nil func is not called, so the zero value
// reports nothing, and a later release can add a field without breaking
// anyone. The funcs are called from the streams' goroutines and from the
// flushers that write live events (Delivered, Replayed, Reset), for many
// streams at once: they must be safe for concurrent use, cheap and
// non-blocking.
type Metrics struct {
	// StreamOpened: a stream started (its headers are about to be sent).
	StreamOpened func()
	// StreamClosed: a stream ended, and why.
	StreamClosed func(reason CloseReason)
	// Delivered: a live event was written to one connection; now is the
	// time of the write. ev.Time is the publish time (zero if unknown).
	Delivered func(ev *broker.Event, now time.Time)
	// Replayed: n events from history were written to one connection.
	// after is "" for events that follow the position the client resumed
	// from (its Last-Event-ID was honoured), else the reason of the reset
	// that preceded them on their topic (broker.ReasonTruncated, ...).
	Replayed func(n int, after broker.ResetReason)
	// Reset: a reset event was sent for topic.
	Reset func(topic string, reason broker.ResetReason)
}

// CloseReason says why a stream ended (Metrics.StreamClosed).
type CloseReason string

// The reasons a stream ends.
const (
	// CloseClient: the client went away, or a write to it failed.
	CloseClient CloseReason = "client"
	// CloseSlow: the client fell behind its queue limit, or a write to it
	// timed out; it resumes from its cursor when it reconnects.
	CloseSlow CloseReason = "slow"
	// CloseDrain: the handler drained, or the http.Server serving the
	// stream shut down.
	CloseDrain CloseReason = "drain"
	// CloseBroker: the subscription ended on the broker's side.
	CloseBroker CloseReason = "broker"
	// CloseExpired: the time the hook set with ExpireAt came.
	CloseExpired CloseReason = "expired"
)
