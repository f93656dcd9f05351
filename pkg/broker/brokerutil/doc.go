// Package brokerutil holds what an implementation of broker.Broker needs and
// its users do not: Queue, the bounded, ordered hand-off from a broker's
// fan-out to one subscriber, and Sub, a broker.Subscription built on it
// (embed it and give NewSub the release hook that unregisters the
// subscriber). The optional interfaces Notifier and Waker, which Queue
// implements, let pkg/sse's fast path write live events from its flushers
// and keep idle streams without a goroutine; a broker whose subscriptions
// embed Sub gets both.
//
// The contract itself — Broker, Subscription, Event, Cursor, the errors and
// validation rules — is package broker.
package brokerutil
