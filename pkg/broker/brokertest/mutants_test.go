package brokertest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The suite must be able to fail: TestMutants runs it, in a child process,
// against membroker wrapped by a deliberately broken layer, and checks that
// the subtests meant to catch each breakage fail (and that the unbroken
// wrapper passes).

const mutantEnv = "BROKERTEST_MUTANT"

var mutants = []struct {
	name  string
	fails []string // subtests that must fail
}{
	{"none", nil},
	{"gap", []string{"PublishIDs", "OrderPerTopic", "ReplayAfterCursor", "ManySubscribers"}},
	{"duplicate", []string{"PublishIDs", "OrderPerTopic"}},
	{"swap", []string{"PublishIDs", "OrderPerTopic", "ReplayLiveSwitch"}},
	{"no-reset", []string{"Truncated", "UnknownCursor", "Epoch", "MultiTopic"}},
	{"wrong-reason", []string{"UnknownCursor", "Epoch"}},
	{"no-position", []string{"PublishIDs", "LiveOnly"}},
	{"lose-type", []string{"Payloads"}},
	{"trim-data", []string{"Payloads"}},
	{"zero-time", []string{"PublishIDs"}},
	{"dot-ids", []string{"PublishIDs"}},
	{"other-id", []string{"PublishIDs", "LiveOnly"}},
	{"copy-events", []string{"SharedEvents"}},
	{"no-trim", []string{"Truncated"}},
	{"ignore-cursor", []string{"ReplayAfterCursor", "MultiTopic"}},
	{"late-registration", []string{"LiveOnly"}},
	{"no-queue-limit", []string{"SlowConsumer"}},
	{"close-noop", []string{"CloseAndCancel"}},
	{"ignore-ctx", []string{"CloseAndCancel"}},
	{"goroutine-per-sub", []string{"SubscriptionsLeakNothing"}},
	{"broker-close-noop", []string{"BrokerClose"}},
	{"unwrapped-errors", []string{"Invalid"}},
}

func TestMutants(t *testing.T) {
	if os.Getenv(mutantEnv) != "" {
		t.Skip("in a mutant child")
	}
	if testing.Short() {
		t.Skip("runs the suite once per mutant")
	}
	failLine := regexp.MustCompile(`--- FAIL: TestMutantChild/(\w+)`)
	sem := make(chan struct{}, 3) // children mostly wait for timeouts
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			sem <- struct{}{}
			defer func() { <-sem }()
			// Only the subtests expected to fail run (all for "none").
			run := "^TestMutantChild$"
			if m.fails != nil {
				run += "/^(" + strings.Join(m.fails, "|") + ")$"
			}
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run="+run, "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.name)
			out, err := cmd.CombinedOutput()
			failed := map[string]bool{}
			for _, sm := range failLine.FindAllStringSubmatch(string(out), -1) {
				failed[sm[1]] = true
			}
			if m.fails == nil {
				if err != nil {
					t.Errorf("the unbroken wrapper fails the suite: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Errorf("the suite passes against mutant %q; want failures in %q", m.name, m.fails)
				return
			}
			for _, name := range m.fails {
				if !failed[name] {
					t.Errorf("mutant %q: subtest %s did not fail (failed: %v)", m.name, name, keys(failed))
				}
			}
			if len(failed) == 0 {
				t.Errorf("mutant %q: child failed without a failing subtest:\n%s", m.name, tail(out))
			}
			t.Logf("mutant %q caught by %v", m.name, keys(failed))
		})
	}
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

// TestMutantChild runs the suite against the mutant named by the
// environment; it is skipped in a normal run.
func TestMutantChild(t *testing.T) {
	kind := os.Getenv(mutantEnv)
	if kind == "" {
		t.Skip("only run by TestMutants")
	}
	brokertest.Run(t, brokertest.Factory{
		New: func(t testing.TB, o brokertest.Options) broker.Broker {
			cfg := membroker.Config{HistorySize: o.HistorySize, QueueLimit: o.QueueLimit}
			switch kind {
			case "no-trim":
				cfg.HistorySize = 100000
			case "no-queue-limit":
				cfg.QueueLimit = 1 << 20
			}
			b := &mutant{kind: kind, inner: membroker.New(cfg)}
			t.Cleanup(func() { b.inner.Close() })
			return b
		},
		Timeout: 2 * time.Second, // membroker delivers at once
	})
}

// mutant wraps a broker and breaks it the way kind says.
type mutant struct {
	kind  string
	inner broker.Broker
}

func (m *mutant) Publish(ctx context.Context, topic string, msg broker.Message) (string, error) {
	id, err := m.inner.Publish(ctx, topic, msg)
	if err != nil && m.kind == "unwrapped-errors" {
		err = errors.New(err.Error())
	}
	switch m.kind {
	case "dot-ids":
		id = strings.ReplaceAll(id, "-", ".")
	case "other-id":
		id += "x"
	}
	return id, err
}

func (m *mutant) Subscribe(ctx context.Context, topics []string, from broker.Cursor) (broker.Subscription, error) {
	if m.kind == "dot-ids" {
		c := broker.Cursor{}
		for k, v := range from {
			c[k] = strings.ReplaceAll(v, ".", "-")
		}
		from = c
	}
	if m.kind == "ignore-cursor" {
		from = nil
	}
	if m.kind == "ignore-ctx" {
		ctx = context.Background()
	}
	s := &mutantSub{m: m, counts: map[string]int{}}
	if m.kind == "late-registration" && len(from) == 0 {
		// Registers on the first Ready or Take: events published in
		// between are lost.
		s.late = func() (broker.Subscription, error) { return m.inner.Subscribe(ctx, topics, from) }
		s.ready = make(chan struct{}, 1)
		s.ready <- struct{}{}
		return s, nil
	}
	sub, err := m.inner.Subscribe(ctx, topics, from)
	if err != nil {
		if m.kind == "unwrapped-errors" {
			err = errors.New(err.Error())
		}
		return nil, err
	}
	s.inner = sub
	if m.kind == "goroutine-per-sub" {
		s.done = make(chan struct{})
		go func() { <-s.done }() // ends only on Close
	}
	return s, nil
}

func (m *mutant) Close() error {
	if m.kind == "broker-close-noop" {
		return nil
	}
	return m.inner.Close()
}

type mutantSub struct {
	m      *mutant
	inner  broker.Subscription
	late   func() (broker.Subscription, error)
	ready  chan struct{}
	counts map[string]int // events per topic so far
	held   *broker.Event  // for "swap"
	done   chan struct{}
	once   sync.Once
}

func (s *mutantSub) Ready() <-chan struct{} {
	if s.inner == nil {
		return s.ready
	}
	return s.inner.Ready()
}

func (s *mutantSub) Take(dst []*broker.Event) ([]*broker.Event, error) {
	if s.inner == nil {
		sub, err := s.late()
		if err != nil {
			return dst, err
		}
		s.inner = sub
	}
	items, err := s.inner.Take(nil)
	for _, e := range items {
		switch s.m.kind {
		case "no-reset":
			if e.Kind == broker.KindReset {
				continue
			}
		case "wrong-reason":
			if e.Kind == broker.KindReset {
				e = &broker.Event{Kind: broker.KindReset, Topic: e.Topic, Reason: broker.ReasonTruncated}
			}
		case "no-position":
			if e.Kind == broker.KindPosition {
				continue
			}
		}
		if e.Kind != broker.KindEvent {
			dst = append(dst, e)
			continue
		}
		s.counts[e.Topic]++
		n := s.counts[e.Topic]
		switch s.m.kind {
		case "gap":
			if n == 5 {
				continue
			}
		case "duplicate":
			if n == 3 {
				dst = append(dst, e)
			}
		case "swap":
			if n == 2 {
				s.held = e
				continue
			}
			if n == 3 && s.held != nil {
				dst = append(dst, e, s.held)
				s.held = nil
				continue
			}
		case "lose-type":
			e = &broker.Event{Kind: e.Kind, Topic: e.Topic, ID: e.ID, Data: e.Data, Time: e.Time}
		case "trim-data":
			e = &broker.Event{Kind: e.Kind, Topic: e.Topic, ID: e.ID, Type: e.Type, Data: strings.TrimSpace(e.Data), Time: e.Time}
		case "zero-time":
			e = &broker.Event{Kind: e.Kind, Topic: e.Topic, ID: e.ID, Type: e.Type, Data: e.Data}
		case "copy-events":
			e = &broker.Event{Kind: e.Kind, Topic: e.Topic, ID: e.ID, Type: e.Type, Data: e.Data, Time: e.Time}
		case "dot-ids":
			e = &broker.Event{Kind: e.Kind, Topic: e.Topic, ID: strings.ReplaceAll(e.ID, "-", "."), Type: e.Type, Data: e.Data, Time: e.Time}
		}
		dst = append(dst, e)
	}
	return dst, err
}

func (s *mutantSub) Close() error {
	if s.done != nil {
		s.once.Do(func() { close(s.done) })
	}
	if s.m.kind == "close-noop" || s.inner == nil {
		return nil
	}
	return s.inner.Close()
}
