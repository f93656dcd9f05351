// Package brokertest is the conformance suite every broker.Broker
// implementation runs: ordering, replay, the replay-to-live switch under
// concurrent publishers, multi-topic cursors, honest resets (truncated,
// epoch, unknown), resume across instances sharing storage, slow consumers,
// Close and cancellation, validation, and load under -race.
//
// An implementation's test calls
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Factory{New: newBroker})
//	}
//
// The exported helpers (Reader, Collect, ParseSequence, CheckSequence) are
// meant for implementations' own tests as well.
//
// Run's subtests run one after another (never in parallel) because one of
// them checks for leaked goroutines with goleak; do not run Run in parallel
// with other tests that start goroutines. Every subtest uses fresh random
// topic names, so a storage shared across tests (one Redis) is fine.
package brokertest

import (
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"go.uber.org/goleak"
)

// Options configure one broker instance for a subtest.
type Options struct {
	// HistorySize is the number of events kept per topic; 0 means the
	// implementation's default.
	HistorySize int
	// QueueLimit is the per-subscription live queue limit; 0 means the
	// implementation's default (usually broker.DefaultQueueLimit).
	QueueLimit int
}

// Factory tells Run how to create instances of the broker under test.
type Factory struct {
	// New returns a ready broker configured with o. It registers its own
	// cleanup with t (t.Cleanup), including Close; Close may then be called
	// twice. Instances returned for the same t share storage iff
	// SharedStorage is set. Required.
	New func(t testing.TB, o Options) broker.Broker

	// SharedStorage says that instances created for one test share their
	// storage, like several replicas on one Redis: a cursor from one is
	// honoured by another. Otherwise every instance has its own log and a
	// cursor from another instance must be reported as ReasonEpoch.
	SharedStorage bool

	// ApproxTrim says that the implementation may keep somewhat more than
	// HistorySize events (Redis "MAXLEN ~" trims whole nodes only).
	ApproxTrim bool

	// IgnoreGoroutines lists the implementation's goroutines that may
	// outlive a broker in the leak checks (for example a shared client's
	// pool reaper or a test container's log reader). Goroutines running
	// before the check started are always ignored.
	IgnoreGoroutines []goleak.Option

	// Timeout bounds every wait of the suite; 0 means 30 s. The suite polls
	// with deadlines and never sleeps, so a generous value costs nothing
	// when the implementation is correct.
	Timeout time.Duration
}

// Run runs the conformance suite against f as subtests of t.
func Run(t *testing.T, f Factory) {
	if f.New == nil {
		t.Fatal("brokertest: Factory.New is nil")
	}
	if f.Timeout <= 0 {
		f.Timeout = 30 * time.Second
	}
	s := &suite{f: f}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"PublishIDs", s.testPublishIDs},
		{"OrderPerTopic", s.testOrderPerTopic},
		{"LiveOnly", s.testLiveOnly},
		{"ReplayAfterCursor", s.testReplayAfterCursor},
		{"ReplayLiveSwitch", s.testReplayLiveSwitch},
		{"MultiTopic", s.testMultiTopic},
		{"Payloads", s.testPayloads},
		{"SharedEvents", s.testSharedEvents},
		{"Truncated", s.testTruncated},
		{"UnknownCursor", s.testUnknownCursor},
		{"ForeignPosition", s.testForeignPosition},
		{"Epoch", s.testEpoch},
		{"SharedStorage", s.testSharedStorage},
		{"SlowConsumer", s.testSlowConsumer},
		{"CloseAndCancel", s.testCloseAndCancel},
		{"SubscriptionsLeakNothing", s.testSubscriptionsLeakNothing},
		{"BrokerClose", s.testBrokerClose},
		{"CloseRace", s.testCloseRace},
		{"Invalid", s.testInvalid},
		{"Idempotency", s.testIdempotency},
		{"Batch", s.testBatch},
		{"ManySubscribers", s.testManySubscribers},
	} {
		t.Run(tc.name, tc.fn)
	}
}
