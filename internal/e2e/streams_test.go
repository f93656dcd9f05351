package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/sse"
)

// entry is one event as Redis stores it: the ID every replica reports and
// the payload.
type entry struct {
	ID   string
	Data string
}

// streamLog reads a topic's whole history straight from Redis: the source
// of truth every client must end up with.
func (c *cluster) streamLog(t testing.TB, topic string) []entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := "herald:{" + topic + "}"
	epoch, err := c.Redis.Get(ctx, base+":e").Result()
	if err != nil {
		t.Fatalf("epoch of %s: %v", topic, err)
	}
	msgs, err := c.Redis.XRange(ctx, base+":s", "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", topic, err)
	}
	out := make([]entry, len(msgs))
	for i, m := range msgs {
		d, _ := m.Values["d"].(string)
		out[i] = entry{ID: epoch + "-" + m.ID, Data: d}
	}
	return out
}

// subscriber is one Go client through the load balancer.
type subscriber struct {
	Topics []string
	client *sse.Client

	mu      sync.Mutex
	events  []sse.Event
	resets  []string
	resetAt []int // len(events) when each reset arrived
	opens   atomic.Int32
	n       atomic.Int64
	err     error // what Subscribe returned
	done    chan struct{}
}

func (s *subscriber) received() ([]sse.Event, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sse.Event(nil), s.events...), append([]string(nil), s.resets...)
}

// streamClient is shared by every subscriber: no timeout (it would cut
// streams), plenty of connections to the one load balancer address.
var streamClient = &http.Client{Transport: &http.Transport{
	MaxIdleConnsPerHost: 1000,
	DisableCompression:  true,
}}

// subscribe starts a subscriber on topics through base (the load
// balancer). It reconnects like a browser: after 200ms (or the server's
// retry), with Last-Event-ID. ctx ends it.
func subscribe(ctx context.Context, base string, topics []string) *subscriber {
	s := &subscriber{Topics: topics, done: make(chan struct{})}
	s.client = &sse.Client{
		HTTPClient:  streamClient,
		Retry:       200 * time.Millisecond,
		IdleTimeout: 8 * time.Second, // 4 heartbeats
		OnOpen:      func(*http.Response) { s.opens.Add(1) },
	}
	q := url.Values{"topic": topics}
	go func() {
		defer close(s.done)
		err := s.client.Subscribe(ctx, base+"/events?"+q.Encode(), func(ev sse.Event) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if ev.Type == sse.ResetEventType {
				s.resets = append(s.resets, ev.Data)
				s.resetAt = append(s.resetAt, len(s.events))
				return nil
			}
			s.events = append(s.events, ev)
			s.n.Add(1)
			return nil
		})
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	return s
}

// topicOf reads the topic from a payload made by payload().
func topicOf(data string) string {
	topic, _, _ := strings.Cut(data, "|")
	return topic
}

// payload is unique per publish attempt: a failed attempt that Redis
// applied anyway (a timeout during a pause) stays distinguishable.
func payload(topic string, publisher, seq, attempt int) string {
	return fmt.Sprintf("%s|p%d|%d|a%d", topic, publisher, seq, attempt)
}

// publisher publishes through a mix of POST /publish on random replicas
// (their own ports) and FCALL herald_publish, retrying each event until
// one attempt succeeds.
type publisher struct {
	c     *cluster
	http  *http.Client
	mu    sync.Mutex
	ok    map[string]string // payload -> ID of every successful attempt
	count atomic.Int64      // events published (successful attempts)
	fails atomic.Int64      // failed attempts
}

func newPublisher(c *cluster) *publisher {
	return &publisher{c: c, http: &http.Client{Timeout: 5 * time.Second}, ok: map[string]string{}}
}

func (p *publisher) postPublish(ctx context.Context, r *replica, topic, data string) (string, error) {
	form := url.Values{"topic": {topic}, "data": {data}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/publish", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct{ ID, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", fmt.Errorf("%s: %d, %v", r.Name, resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || body.ID == "" {
		return "", fmt.Errorf("%s: %d %s", r.Name, resp.StatusCode, body.Error)
	}
	return body.ID, nil
}

func (p *publisher) fcall(ctx context.Context, topic, data string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return p.c.Redis.FCall(ctx, "herald_publish", []string{topic}, "", data).Text()
}

// publish publishes one event, retrying failed attempts (each with its own
// payload) every 100ms until one succeeds or within has passed.
func (p *publisher) publish(ctx context.Context, rng *rand.Rand, viaHTTP bool, topic string, pub, seq int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		data := payload(topic, pub, seq, attempt)
		var id string
		var err error
		if viaHTTP {
			id, err = p.postPublish(ctx, p.c.Replicas[rng.IntN(len(p.c.Replicas))], topic, data)
		} else {
			id, err = p.fcall(ctx, topic, data)
		}
		if err == nil {
			p.mu.Lock()
			p.ok[data] = id
			p.mu.Unlock()
			p.count.Add(1)
			return nil
		}
		last = err
		p.fails.Add(1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("event %d of publisher %d on %s not published within %v: %w", seq, pub, topic, within, last)
}

// waitComplete waits until every subscriber has as many events as the
// Redis streams of its topics hold.
func waitComplete(t *testing.T, c *cluster, subs []*subscriber, topics []string, within time.Duration) map[string][]entry {
	t.Helper()
	logs := map[string][]entry{}
	for _, tp := range topics {
		logs[tp] = c.streamLog(t, tp)
	}
	deadline := time.Now().Add(within)
	for {
		short := 0
		var example string
		for i, s := range subs {
			want := 0
			for _, tp := range s.Topics {
				want += len(logs[tp])
			}
			if got := int(s.n.Load()); got < want {
				short++
				if example == "" {
					example = fmt.Sprintf("subscriber %d on %v has %d of %d", i, s.Topics, got, want)
				}
			}
		}
		if short == 0 {
			return logs
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v, %d subscribers still miss events, e.g. %s", within, short, example)
			return logs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// verify checks that every subscriber got exactly the events of its
// topics' streams, each once, in order, with the IDs every replica
// reports (single-topic streams), and no reset.
func verify(t *testing.T, subs []*subscriber, logs map[string][]entry) {
	t.Helper()
	bad := 0
	for i, s := range subs {
		events, resets := s.received()
		if len(resets) > 0 {
			t.Errorf("subscriber %d on %v got herald.reset %v: nothing was lost, no reset is acceptable", i, s.Topics, resets)
			bad++
		}
		byTopic := map[string][]sse.Event{}
		for _, ev := range events {
			byTopic[topicOf(ev.Data)] = append(byTopic[topicOf(ev.Data)], ev)
		}
		for tp := range byTopic {
			if !contains(s.Topics, tp) {
				t.Errorf("subscriber %d on %v got an event of %q", i, s.Topics, tp)
				bad++
			}
		}
		for _, tp := range s.Topics {
			if msg := compareLog(byTopic[tp], logs[tp], len(s.Topics) == 1); msg != "" {
				t.Errorf("subscriber %d on %v, topic %s: %s", i, s.Topics, tp, msg)
				bad++
			}
		}
		if bad > 10 {
			t.Fatal("too many mismatches; stopping")
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// compareLog describes the first difference between what a client got and
// the stream, or returns "".
func compareLog(got []sse.Event, want []entry, checkIDs bool) string {
	n := min(len(got), len(want))
	for i := 0; i < n; i++ {
		if got[i].Data != want[i].Data {
			return fmt.Sprintf("event %d is %q, the stream has %q there (%d received, %d in the stream)", i, got[i].Data, want[i].Data, len(got), len(want))
		}
		if checkIDs && got[i].ID != want[i].ID {
			return fmt.Sprintf("event %d (%q) has id %q, the stream's is %q", i, got[i].Data, got[i].ID, want[i].ID)
		}
	}
	switch {
	case len(got) < len(want):
		return fmt.Sprintf("missing the last %d events (first missing: %q)", len(want)-len(got), want[len(got)].Data)
	case len(got) > len(want):
		return fmt.Sprintf("%d events more than the stream (first extra: %q)", len(got)-len(want), got[len(want)].Data)
	}
	return ""
}

// checkPublished checks that every successful publish is in its topic's
// stream under the ID the publisher was given.
func checkPublished(t *testing.T, p *publisher, logs map[string][]entry) {
	t.Helper()
	ids := map[string]string{}
	for _, l := range logs {
		for _, e := range l {
			ids[e.Data] = e.ID
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	missing := 0
	for data, id := range p.ok {
		if got, ok := ids[data]; !ok || got != id {
			missing++
			if missing <= 5 {
				t.Errorf("published %q as %s, the stream has it as %q", data, id, got)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d acknowledged publishes are not in the streams as acknowledged", missing)
	}
}

// stopAll cancels the subscribers and checks they ended only because of
// that (a final error, e.g. a 503 that reached a client, fails the test).
func stopAll(t *testing.T, cancel context.CancelFunc, subs []*subscriber) {
	t.Helper()
	cancel()
	deadline := time.After(30 * time.Second)
	for i, s := range subs {
		select {
		case <-s.done:
		case <-deadline:
			t.Fatalf("subscriber %d did not stop within 30s", i)
		}
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("subscriber %d on %v ended by itself: %v", i, s.Topics, err)
		}
	}
}
