package sse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"pgregory.net/rapid"
)

// TestTopicHandlerModel is a property-based state-machine test of the
// TopicHandler on a membroker, over HTTP, against a reference model (see
// brokertest.RunModel for the broker-level one). Actions: publish (random
// types, data with line breaks), trim (a burst larger than the history),
// open a stream of 1-3 of 4 topics with a Last-Event-ID the test has seen —
// a publish ID, an id: of any stream (one-topic or composite, of any topic
// set), the last id of a closed stream — or garbage or none, close a stream
// (the handler drains it; the client keeps its last id, as a browser does),
// and restart (a new broker: every stream ends, history is lost). After
// every action each open stream must have delivered, per topic, exactly:
//
//   - no cursor: only events published after it opened;
//   - a cursor holding a position of this topic from this broker that the
//     history covers: every later event, once, in order, no reset;
//   - a cursor that does not cover the topic, holds another topic's
//     position, is garbage, of an earlier broker, or older than the
//     history: one herald.reset with reason "unknown-cursor", "epoch" or
//     "truncated" respectively ("epoch" is accepted for another topic's
//     one-topic id and for garbage shaped like a position), then exactly
//     the retained history and live events.
//
// A one-topic stream's ids are exactly the publish IDs. Ids are opaque: the
// model knows what each one means only by where it came from.
func TestTopicHandlerModel(t *testing.T) {
	reported := false
	rapid.Check(t, func(rt *rapid.T) {
		m := newHTTPModel(rt)
		m.t, m.reported = t, &reported
		rt.Repeat(m.actions())
		m.finish(rt)
	})
}

const (
	hmTopics  = 4
	hmHistory = 4
	hmStreams = 4
	hmWait    = 5 * time.Second
)

var hmNames = []string{"a", "b", "c", "d"}

// hmEvent is one published event: its ID and what a client decodes.
type hmEvent struct {
	id, typ, data string
}

type hmTopic struct {
	log []hmEvent
	lo  int // events with seq <= lo are out of the history
}

// hmPos is a place in a topic: after event seq of incarnation inc.
type hmPos struct{ inc, seq int }

// hmCursor is a Last-Event-ID the test holds, and what it means: the
// positions it holds per topic, by where it came from.
type hmCursor struct {
	id  string
	pos map[string]hmPos // nil for garbage and ""
	// single: a one-topic stream's id (a publish ID or position), which
	// names no topic; a topic it does not cover may be told "epoch".
	single    bool
	lookalike bool   // garbage shaped like a position
	from      string // where it came from, for logs
}

func (c hmCursor) String() string {
	if c.id == "" {
		return `""`
	}
	var ps []string
	for _, t := range slices.Sorted(maps.Keys(c.pos)) {
		ps = append(ps, fmt.Sprintf("%s@%d#%d", t, c.pos[t].inc, c.pos[t].seq))
	}
	return fmt.Sprintf("%q (%s: %s)", c.id, c.from, strings.Join(ps, " "))
}

var hmGarbage = []hmCursor{
	{id: "zz"},
	{id: "?"},
	{id: "h1.a.b"},
	{id: "h1.?.?"},
	{id: "h9.x"},
	{id: "a.b.c"},
	{id: "9-9", lookalike: true},
	{id: "00000000-1", lookalike: true},
	{id: "zzzzzzzz-0", lookalike: true},
}

// hmStream is an open stream and what the model expects of it.
type hmStream struct {
	n      int
	topics []string // sorted
	sent   hmCursor
	h      *TopicHandler
	c      *Client
	cancel context.CancelFunc
	opened chan struct{}
	done   chan struct{}
	err    error // Subscribe's result, once done

	mu     sync.Mutex
	events []Event
	bytes  bool // a byte of the body arrived
	notify chan struct{}

	want     map[string]*hmWant
	recorded int // events whose ids went to the pool
}

type hmWant struct {
	reasons        []broker.ResetReason // a reset with one of these is required; nil: none allowed
	maybeTruncated bool                 // a "truncated" reset is allowed (the cursor's event was the last trimmed)
	start          int                  // the seq the topic continues after
}

type httpModel struct {
	t        *testing.T
	reported *bool // the test's first failure was logged
	rt       *rapid.T
	inc      int
	b        *membroker.Broker
	srv      *httptest.Server
	hc       *http.Client
	mu       sync.Mutex // guards handler
	handler  map[string]*TopicHandler
	topics   map[string]*hmTopic
	bydata   map[string][2]int // data as decoded -> topic index, seq (current incarnation)
	pool     []hmCursor
	streams  []*hmStream
	nstream  int
	npub     int
	msgs     *rapid.Generator[broker.Message]
}

func newHTTPModel(rt *rapid.T) *httpModel {
	m := &httpModel{rt: rt, handler: map[string]*TopicHandler{}, topics: map[string]*hmTopic{}, bydata: map[string][2]int{}}
	for _, n := range hmNames {
		m.topics[n] = &hmTopic{}
	}
	m.b = membroker.New(membroker.Config{HistorySize: hmHistory})
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		h := m.handler[r.URL.Path]
		m.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h.ServeHTTP(w, r)
	}))
	tr := &http.Transport{}
	m.hc = &http.Client{Transport: tr}
	rt.Cleanup(func() {
		for _, s := range m.streams {
			s.cancel()
			<-s.done
		}
		m.b.Close()
		m.srv.Close()
		tr.CloseIdleConnections()
	})
	piece := rapid.SampledFrom([]string{"", "x", "hello world", "\n", "\r\n", "\r", "data: x", " lead", "\tt", "é∑", "\x00", ":c", "id: 7"})
	m.msgs = rapid.Custom(func(rt *rapid.T) broker.Message {
		typ := rapid.SampledFrom([]string{"", "message", "t1", "update.v2"}).Draw(rt, "type")
		parts := rapid.SliceOfN(piece, 0, 4).Draw(rt, "data")
		return broker.Message{Type: typ, Data: strings.Join(parts, "")}
	})
	return m
}

func (m *httpModel) actions() map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"publish": m.publish,
		"trim":    m.trim,
		"open":    m.open,
		"close":   m.close,
		"restart": m.restart,
		"":        m.check,
	}
}

var crlf = strings.NewReplacer("\r\n", "\n", "\r", "\n")

func (m *httpModel) publishTo(rt *rapid.T, topic string, msg broker.Message) {
	// A unique tail tells events apart on a multi-topic stream, whose ids
	// the test does not parse.
	m.npub++
	msg.Data += "#" + strconv.Itoa(m.npub)
	ctx, cancel := context.WithTimeout(context.Background(), hmWait)
	defer cancel()
	id, err := m.b.Publish(ctx, topic, msg)
	if err != nil {
		rt.Fatalf("Publish(%s): %v", topic, err)
	}
	tp := m.topics[topic]
	typ := msg.Type
	if typ == "" {
		typ = "message"
	}
	data := crlf.Replace(msg.Data)
	tp.log = append(tp.log, hmEvent{id: id, typ: typ, data: data})
	seq := len(tp.log)
	tp.lo = max(tp.lo, seq-hmHistory)
	m.bydata[data] = [2]int{slices.Index(hmNames, topic), seq}
	m.pool = append(m.pool, hmCursor{id: id, pos: map[string]hmPos{topic: {m.inc, seq}}, single: true, from: "publish"})
	rt.Logf("published %s #%d -> %q", topic, seq, id)
}

func (m *httpModel) publish(rt *rapid.T) {
	topic := rapid.SampledFrom(hmNames).Draw(rt, "topic")
	m.publishTo(rt, topic, m.msgs.Draw(rt, "message"))
}

func (m *httpModel) trim(rt *rapid.T) {
	topic := rapid.SampledFrom(hmNames).Draw(rt, "topic")
	for i := range hmHistory + 1 {
		m.publishTo(rt, topic, broker.Message{Type: "burst", Data: strconv.Itoa(i)})
	}
}

// expect returns what topic t of a new stream must deliver for cursor c.
func (m *httpModel) expect(t string, c hmCursor) *hmWant {
	tp := m.topics[t]
	w := &hmWant{start: tp.lo}
	p, covered := c.pos[t]
	switch {
	case c.id == "":
		w.start = len(tp.log)
	case c.pos == nil && c.lookalike:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}
	case c.pos == nil:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown}
	case !covered && c.single:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown, broker.ReasonEpoch}
	case !covered:
		w.reasons = []broker.ResetReason{broker.ReasonUnknown}
	case p.inc != m.inc:
		w.reasons = []broker.ResetReason{broker.ReasonEpoch}
	case p.seq < tp.lo:
		w.reasons = []broker.ResetReason{broker.ReasonTruncated}
	case p.seq == tp.lo && p.seq > 0:
		w.maybeTruncated = true // start is lo either way
	default:
		w.start = p.seq
	}
	return w
}

func (m *httpModel) open(rt *rapid.T) {
	if len(m.streams) >= hmStreams {
		rt.Skip("enough streams")
	}
	topics := rapid.SliceOfNDistinct(rapid.SampledFrom(hmNames), 1, 3, rapid.ID[string]).Draw(rt, "topics")
	var c hmCursor
	switch rapid.IntRange(0, 2).Draw(rt, "cursor kind") {
	case 0: // none
	case 1:
		if len(m.pool) > 0 {
			c = m.pool[rapid.IntRange(0, len(m.pool)-1).Draw(rt, "cursor")]
		}
	case 2:
		c = rapid.SampledFrom(hmGarbage).Draw(rt, "garbage")
		c.from = "garbage"
	}
	s := &hmStream{
		n: m.nstream, sent: c, want: map[string]*hmWant{},
		opened: make(chan struct{}), done: make(chan struct{}), notify: make(chan struct{}, 1),
	}
	m.nstream++
	s.topics = slices.Sorted(slices.Values(topics))
	var desc []string
	for _, t := range s.topics {
		w := m.expect(t, c)
		s.want[t] = w
		desc = append(desc, fmt.Sprintf("%s: reset %q, after #%d", t, w.reasons, w.start))
	}
	s.h = &TopicHandler{
		Broker:            m.b,
		Heartbeat:         -1,
		Hijack:            rapid.Bool().Draw(rt, "hijack"),
		NoPublisherWrites: rapid.Bool().Draw(rt, "no publisher writes"),
		NoPark:            rapid.Bool().Draw(rt, "no park"),
		Logger:            discardLogger(),
	}
	path := "/s/" + strconv.Itoa(s.n)
	m.mu.Lock()
	m.handler[path] = s.h
	m.mu.Unlock()
	q := url.Values{"topic": topics}
	s.c = &Client{HTTPClient: m.hc, LastEventID: c.id, MaxRetries: -1, OnOpen: func(r *http.Response) {
		r.Body = &bodyWatch{ReadCloser: r.Body, s: s}
		close(s.opened)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.err = s.c.Subscribe(ctx, m.srv.URL+path+"?"+q.Encode(), func(ev Event) error {
			s.mu.Lock()
			s.events = append(s.events, ev)
			s.mu.Unlock()
			select {
			case s.notify <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	m.streams = append(m.streams, s)
	rt.Logf("stream %d %q from %v: %s", s.n, topics, c, strings.Join(desc, "; "))
	select {
	case <-s.opened:
	case <-s.done:
		rt.Fatalf("stream %d: did not open: %v", s.n, s.err)
	case <-time.After(hmWait):
		rt.Fatalf("stream %d: not open after %v", s.n, hmWait)
	}
	// Wait for the stream's first write when one must come (a reset, a
	// replay, or the position of a stream that had none), so that the id
	// a client holds when the stream is closed does not depend on timing:
	// rapid replays a failing case and must see the same ids. Otherwise
	// the handler may write a new id or none, but one that means the same.
	write := c.id == ""
	for _, t := range s.topics {
		w := s.want[t]
		write = write || w.reasons != nil || len(m.topics[t].log) > w.start
	}
	if write {
		deadline := time.NewTimer(hmWait)
		defer deadline.Stop()
		for !s.gotBytes() {
			select {
			case <-s.notify:
			case <-s.done:
			case <-deadline.C:
				rt.Fatalf("stream %d: nothing written within %v", s.n, hmWait)
			}
		}
	}
}

func (s *hmStream) gotBytes() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// bodyWatch tells its stream when the first bytes of the body arrive.
type bodyWatch struct {
	io.ReadCloser
	s *hmStream
}

func (b *bodyWatch) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.s.mu.Lock()
		first := !b.s.bytes
		b.s.bytes = true
		b.s.mu.Unlock()
		if first {
			select {
			case b.s.notify <- struct{}{}:
			default:
			}
		}
	}
	return n, err
}

// close drains one stream's handler: the client reads to the end and keeps
// its last id, which joins the pool.
func (m *httpModel) close(rt *rapid.T) {
	if len(m.streams) == 0 {
		rt.Skip("no stream")
	}
	k := rapid.IntRange(0, len(m.streams)-1).Draw(rt, "stream")
	s := m.streams[k]
	ctx, cancel := context.WithTimeout(context.Background(), hmWait)
	defer cancel()
	if err := s.h.Drain(ctx, 0); err != nil {
		rt.Fatalf("stream %d: Drain: %v", s.n, err)
	}
	m.streams = slices.Delete(m.streams, k, k+1)
	m.retire(rt, s)
}

// retire waits for the end of an ended stream, checks it a last time and
// keeps its last id.
func (m *httpModel) retire(rt *rapid.T, s *hmStream) {
	select {
	case <-s.done:
	case <-time.After(hmWait):
		rt.Fatalf("stream %d: did not end within %v", s.n, hmWait)
	}
	s.cancel()
	if !errors.Is(s.err, io.EOF) {
		rt.Fatalf("stream %d ended with %v, want io.EOF", s.n, s.err)
	}
	pos, complete, err := m.verify(s)
	if err != nil {
		m.fail(rt, s, err)
	}
	if !complete {
		m.fail(rt, s, hmViolation("a stream is missing events", "at its end"))
	}
	last := s.c.LastID()
	c := s.sent
	if last != s.sent.id {
		c = hmCursor{id: last, pos: pos, single: len(s.topics) == 1, from: fmt.Sprintf("end of stream %d", s.n)}
	}
	if c.id != "" {
		m.pool = append(m.pool, c)
	}
	m.mu.Lock()
	delete(m.handler, "/s/"+strconv.Itoa(s.n))
	m.mu.Unlock()
	rt.Logf("stream %d ended at %v", s.n, c)
}

func (m *httpModel) restart(rt *rapid.T) {
	m.b.Close() // every stream ends
	for _, s := range m.streams {
		m.retire(rt, s)
	}
	m.streams = nil
	m.inc++
	m.b = membroker.New(membroker.Config{HistorySize: hmHistory})
	for _, tp := range m.topics {
		tp.log, tp.lo = nil, 0
	}
	clear(m.bydata)
	rt.Logf("restarted: incarnation %d", m.inc)
}

func (m *httpModel) check(rt *rapid.T) {
	for _, s := range m.streams {
		m.await(rt, s)
	}
}

func (m *httpModel) finish(rt *rapid.T) { m.check(rt) }

// await waits until s has delivered everything the model expects, or a
// difference shows.
func (m *httpModel) await(rt *rapid.T, s *hmStream) {
	deadline := time.NewTimer(hmWait)
	defer deadline.Stop()
	for {
		_, complete, err := m.verify(s)
		if err != nil {
			m.fail(rt, s, err)
		}
		if complete {
			return
		}
		select {
		case <-s.notify:
		case <-s.done:
			if _, complete, err = m.verify(s); err == nil && !complete {
				err = hmViolation("a stream is missing events", fmt.Sprintf("ended early: %v", s.err))
			}
			if err != nil {
				m.fail(rt, s, err)
			}
			return
		case <-deadline.C:
			m.fail(rt, s, hmViolation("a stream is missing events", fmt.Sprintf("not complete within %v", hmWait)))
		}
	}
}

// verify checks what s received so far, per topic, against the model. It
// returns the positions the stream holds after what it received, and
// whether it is complete. Every id received joins the pool, with the
// positions it stands for.
func (m *httpModel) verify(s *hmStream) (map[string]hmPos, bool, error) {
	s.mu.Lock()
	events := slices.Clone(s.events)
	s.mu.Unlock()
	pos := map[string]hmPos{}
	reset := map[string]string{}
	got := map[string][]int{} // seqs per topic
	for _, t := range s.topics {
		pos[t] = hmPos{m.inc, s.want[t].start}
	}
	for i, ev := range events {
		if ev.Type == ResetEventType {
			var r struct {
				Topic  string
				Reason broker.ResetReason
			}
			if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
				return nil, false, hmViolation("a malformed reset event", fmt.Sprintf("%q: %v", ev.Data, err))
			}
			switch {
			case !slices.Contains(s.topics, r.Topic):
				return nil, false, hmViolation("a reset of a topic not subscribed", ev.Data)
			case reset[r.Topic] != "" || len(got[r.Topic]) > 0:
				return nil, false, hmViolation("a reset after the start", fmt.Sprintf("%s after %q and %d events", ev.Data, reset[r.Topic], len(got[r.Topic])))
			}
			reset[r.Topic] = string(r.Reason)
			w := s.want[r.Topic]
			ok := slices.Contains(w.reasons, r.Reason) || w.maybeTruncated && r.Reason == broker.ReasonTruncated
			if !ok {
				return nil, false, hmViolation("an unexpected reset or reason", fmt.Sprintf("topic %s: reset %q, want %q", r.Topic, r.Reason, w.reasons))
			}
			continue
		}
		at, ok := m.bydata[ev.Data]
		if !ok {
			return nil, false, hmViolation("an event never published", fmt.Sprintf("%q (id %q)", ev.Data, ev.ID))
		}
		t := hmNames[at[0]]
		w := s.want[t]
		if w == nil {
			return nil, false, hmViolation("an event of a topic not subscribed", fmt.Sprintf("%s #%d", t, at[1]))
		}
		if w.reasons != nil && reset[t] == "" {
			return nil, false, hmViolation("a reset is missing", fmt.Sprintf("topic %s: event #%d, but no reset (want one of %q); the stream continued after #%d", t, at[1], w.reasons, w.start))
		}
		next := w.start + len(got[t]) + 1
		if at[1] != next {
			return nil, false, hmViolation("events differ from the log", fmt.Sprintf("topic %s: got #%d, want #%d (reset %q, start after #%d, got %v)", t, at[1], next, reset[t], w.start, got[t]))
		}
		e := m.topics[t].log[at[1]-1]
		if ev.Type != e.typ && !(ev.Type == "" && e.typ == "message") {
			return nil, false, hmViolation("an event's type differs", fmt.Sprintf("topic %s #%d: %q, want %q", t, at[1], ev.Type, e.typ))
		}
		if len(s.topics) == 1 && ev.ID != e.id {
			return nil, false, hmViolation("a one-topic stream's id is not the publish ID", fmt.Sprintf("topic %s #%d: id %q, published as %q", t, at[1], ev.ID, e.id))
		}
		got[t] = append(got[t], at[1])
		pos[t] = hmPos{m.inc, at[1]}
		// Until a topic's reset is on the wire, an id may still carry the
		// client's old place for it (the handler keeps the cursor's part
		// until the topic's position item): such an id means "reset that
		// topic again", or the position after the reset. Only ids whose
		// meaning is certain join the pool.
		certain := true
		for _, u := range s.topics {
			certain = certain && (s.want[u].reasons == nil || reset[u] != "")
		}
		if i >= s.recorded && certain {
			s.recorded = i + 1
			m.pool = append(m.pool, hmCursor{id: ev.ID, pos: maps.Clone(pos), single: len(s.topics) == 1, from: fmt.Sprintf("stream %d", s.n)})
		}
	}
	complete := true
	for _, t := range s.topics {
		w := s.want[t]
		if w.reasons != nil && reset[t] == "" {
			complete = false
		}
		if len(got[t]) < len(m.topics[t].log)-w.start {
			complete = false
		}
	}
	return pos, complete, nil
}

// hmError is a difference between the handler and the model; the check
// fails with its class alone, so rapid can shrink the case (it keeps a
// smaller case only if the message is the same).
type hmError struct{ class, detail string }

func (e *hmError) Error() string { return e.class + ": " + e.detail }

func hmViolation(class, detail string) error { return &hmError{class, detail} }

// fail logs err and fails the check with its class. The first failure of
// the test is also logged on the test itself: when rapid cannot replay it
// (a timing-dependent bug), that is the only trace.
func (m *httpModel) fail(rt *rapid.T, s *hmStream, err error) {
	if !*m.reported {
		*m.reported = true
		m.t.Logf("first failure (the case rapid shrinks follows): stream %d %q: %v", s.n, s.topics, err)
	}
	var e *hmError
	if errors.As(err, &e) {
		rt.Logf("stream %d %q: %s", s.n, s.topics, e.detail)
		rt.Fatal(e.class)
	}
	rt.Fatalf("stream %d: %v", s.n, err)
}
