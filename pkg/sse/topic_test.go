package sse

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// events reads decoded events from a stream in the background.
type eventReader struct {
	t      testing.TB
	events chan Event
	dec    *Decoder
}

func newEventReader(t testing.TB, body io.ReadCloser) *eventReader {
	er := &eventReader{t: t, events: make(chan Event, 4096), dec: NewDecoder(body)}
	go func() {
		defer close(er.events)
		for {
			ev, err := er.dec.Next()
			if err != nil {
				return
			}
			er.events <- ev
		}
	}()
	t.Cleanup(func() {
		body.Close()
		for range er.events {
		}
	})
	return er
}

func (er *eventReader) next(d time.Duration) Event {
	er.t.Helper()
	select {
	case ev, ok := <-er.events:
		if !ok {
			er.t.Fatalf("stream ended, wanted an event")
		}
		return ev
	case <-time.After(d):
		er.t.Fatalf("no event within %v", d)
	}
	return Event{}
}

// closed waits for the end of the stream.
func (er *eventReader) closed(d time.Duration) {
	er.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case _, ok := <-er.events:
			if !ok {
				return
			}
		case <-deadline:
			er.t.Fatalf("stream still open after %v", d)
		}
	}
}

type topicEnv struct {
	t   *testing.T
	b   *membroker.Broker
	h   *TopicHandler
	srv *httptest.Server
	m   *recMetrics
}

func newTopicEnv(t *testing.T, mode mode, cfg membroker.Config) *topicEnv {
	b := membroker.New(cfg)
	m := newRecMetrics()
	h := &TopicHandler{Broker: b, Heartbeat: -1, Metrics: m.metrics(), Logger: discardLogger()}
	mode.set(h)
	srv := httptest.NewServer(h)
	t.Cleanup(func() { b.Close() })
	t.Cleanup(srv.Close)
	return &topicEnv{t: t, b: b, h: h, srv: srv, m: m}
}

func (e *topicEnv) publish(topic, typ, data string) string {
	e.t.Helper()
	id, err := e.b.Publish(context.Background(), topic, broker.Message{Type: typ, Data: data})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *topicEnv) open(query string, lastID string) (*http.Response, *eventReader) {
	e.t.Helper()
	var resp *http.Response
	if lastID != "" {
		resp = get(e.t, nil, e.srv.URL+"/events?"+query, "Last-Event-ID", lastID)
	} else {
		resp = get(e.t, nil, e.srv.URL+"/events?"+query)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp, newEventReader(e.t, resp.Body)
}

// recMetrics records what a TopicHandler's Metrics are told.
type recMetrics struct {
	mu            sync.Mutex
	opened        int
	closed        map[CloseReason]int
	delivered     int
	replayed      int                        // in total
	replayedAfter map[broker.ResetReason]int // by reason ("": resumed)
	resets        map[broker.ResetReason]int
}

func newRecMetrics() *recMetrics {
	return &recMetrics{closed: map[CloseReason]int{}, replayedAfter: map[broker.ResetReason]int{}, resets: map[broker.ResetReason]int{}}
}

func (m *recMetrics) metrics() Metrics {
	return Metrics{
		StreamOpened: func() { m.mu.Lock(); m.opened++; m.mu.Unlock() },
		StreamClosed: func(r CloseReason) { m.mu.Lock(); m.closed[r]++; m.mu.Unlock() },
		Delivered:    func(*broker.Event, time.Time) { m.mu.Lock(); m.delivered++; m.mu.Unlock() },
		Replayed: func(n int, after broker.ResetReason) {
			m.mu.Lock()
			m.replayed += n
			m.replayedAfter[after] += n
			m.mu.Unlock()
		},
		Reset: func(topic string, reason broker.ResetReason) { m.mu.Lock(); m.resets[reason]++; m.mu.Unlock() },
	}
}
func (m *recMetrics) get(f func(*recMetrics) int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return f(m)
}

const wait = 10 * time.Second

// mode is a TopicHandler's connection mode: Hijack and its knobs.
type mode struct {
	name                              string
	hijack, noPublisherWrites, noPark bool
}

func (m mode) set(h *TopicHandler) {
	h.Hijack, h.NoPublisherWrites, h.NoPark = m.hijack, m.noPublisherWrites, m.noPark
}

// The connection modes: hijacked with flusher writes and parked streams
// (what cmd/server runs), hijacked without parking, hijacked with every
// write from the stream's goroutine, and the ResponseWriter (the default).
var (
	hijacked       = mode{name: "hijack", hijack: true}
	responseWriter = mode{name: "responsewriter"}
	modes          = []mode{
		hijacked,
		{name: "hijack-unparked", hijack: true, noPark: true},
		{name: "hijack-goroutine", hijack: true, noPublisherWrites: true},
		responseWriter,
	}
)

// eachMode runs a stream test in every connection mode, in parallel.
func eachMode(t *testing.T, f func(t *testing.T, m mode)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			f(t, m)
		})
	}
}

func TestTopicLiveEventsCarryPublishIDs(t *testing.T) {
	eachMode(t, testTopicLiveEventsCarryPublishIDs)
}

func testTopicLiveEventsCarryPublishIDs(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	_, er := e.open("topic=news", "")
	// The publish right after the headers must arrive: the subscription is
	// registered before the headers go out.
	id1 := e.publish("news", "", "first")
	id2 := e.publish("news", "my-custom-event", "two\nlines\r\nand\rmore")
	id3 := e.publish("news", "", "")
	for _, want := range []Event{
		{ID: id1, Data: "first"},
		{ID: id2, Type: "my-custom-event", Data: "two\nlines\nand\nmore"},
		{ID: id3, Data: ""},
	} {
		if got := er.next(wait); got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	if got := e.m.get(func(m *recMetrics) int { return m.delivered }); got != 3 {
		t.Fatalf("Delivered called %d times, want 3", got)
	}
}

func TestTopicStartPositionSentBeforeFirstEvent(t *testing.T) {
	eachMode(t, testTopicStartPositionSentBeforeFirstEvent)
}

func testTopicStartPositionSentBeforeFirstEvent(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	before := e.publish("news", "", "old")
	resp := get(t, nil, e.srv.URL+"/events?topic=news")
	// No event yet, but the client already holds a resumable position.
	if b := newLineReader(t, resp.Body).block(wait); len(b) != 1 || b[0] != "id: "+before {
		t.Fatalf("first block %q, want the id-only block %q", b, "id: "+before)
	}
	// A disconnect now and a publish before the reconnect lose nothing.
	missed := e.publish("news", "", "while away")
	_, er2 := e.open("topic=news", before)
	if got := er2.next(wait); got.ID != missed || got.Data != "while away" {
		t.Fatalf("resume got %+v, want %s", got, missed)
	}
}

func TestTopicResumeFromLastEventID(t *testing.T) { eachMode(t, testTopicResumeFromLastEventID) }

func testTopicResumeFromLastEventID(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	for _, how := range []string{"header", "query"} {
		t.Run(how, func(t *testing.T) {
			var ids []string
			for i := 1; i <= 10; i++ {
				ids = append(ids, e.publish("t-"+how, "", fmt.Sprint(i)))
			}
			var er *eventReader
			if how == "header" {
				_, er = e.open("topic=t-header", ids[4])
			} else {
				_, er = e.open("topic=t-query&lastEventId="+url.QueryEscape(ids[4]), "")
			}
			for i := 5; i < 10; i++ {
				if got := er.next(wait); got.ID != ids[i] || got.Data != fmt.Sprint(i+1) {
					t.Fatalf("replay %d: got %+v, want id %s", i+1, got, ids[i])
				}
			}
			live := e.publish("t-"+how, "", "live")
			if got := er.next(wait); got.ID != live {
				t.Fatalf("live: got %+v, want %s", got, live)
			}
		})
	}
	if got := e.m.get(func(m *recMetrics) int { return m.replayedAfter[""] }); got != 10 {
		t.Fatalf("Replayed after a resume: %d, want 10 (%v)", got, e.m.replayedAfter)
	}
}

func TestTopicMultiTopicCompositeCursorResume(t *testing.T) {
	eachMode(t, testTopicMultiTopicCompositeCursorResume)
}

func testTopicMultiTopicCompositeCursorResume(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	resp, er := e.open("topic=b&topic=a&topic=b", "") // unordered, duplicated: canonicalised
	a1 := e.publish("a", "", "a1")
	b1 := e.publish("b", "", "b1")
	ev := er.next(wait)
	if ev.Data != "a1" || !strings.HasPrefix(ev.ID, "h2.") {
		t.Fatalf("first: %+v", ev)
	}
	ev = er.next(wait)
	if ev.Data != "b1" || ev.ID != FormatCursor(broker.Cursor{"a": a1, "b": b1}) {
		t.Fatalf("second: %+v, want cursor %s", ev, FormatCursor(broker.Cursor{"a": a1, "b": b1}))
	}
	resp.Body.Close()
	// While away, both topics move.
	var want []string
	for i := 0; i < 5; i++ {
		e.publish("a", "", fmt.Sprint("a", i))
		want = append(want, fmt.Sprint("a", i))
		e.publish("b", "", fmt.Sprint("b", i))
		want = append(want, fmt.Sprint("b", i))
	}
	_, er = e.open("topic=a&topic=b", ev.ID)
	gotA, gotB := []string{}, []string{}
	for range want {
		ev := er.next(wait)
		if strings.HasPrefix(ev.Data, "a") {
			gotA = append(gotA, ev.Data)
		} else {
			gotB = append(gotB, ev.Data)
		}
	}
	if strings.Join(gotA, ",") != "a0,a1,a2,a3,a4" || strings.Join(gotB, ",") != "b0,b1,b2,b3,b4" {
		t.Fatalf("resumed a=%v b=%v", gotA, gotB)
	}
}

func TestTopicResetEvents(t *testing.T) { eachMode(t, testTopicResetEvents) }

func testTopicResetEvents(t *testing.T, m mode) {
	other := membroker.New(membroker.Config{})
	defer other.Close()
	foreign, _ := other.Publish(context.Background(), "t", broker.Message{Data: "x"})

	e := newTopicEnv(t, m, membroker.Config{HistorySize: 3})
	var ids []string
	for i := 1; i <= 6; i++ {
		ids = append(ids, e.publish("t", "", fmt.Sprint(i)))
	}
	cases := []struct {
		name, cursor string
		reason       broker.ResetReason
	}{
		{"truncated", ids[0], broker.ReasonTruncated},
		{"another epoch", foreign, broker.ReasonEpoch},
		{"unknown format", "not-a-cursor", broker.ReasonUnknown},
		{"composite of another topic set", "h1.x-1.y-2", broker.ReasonUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, er := e.open("topic=t", tc.cursor)
			ev := er.next(wait)
			var data struct{ Topic, Reason string }
			if ev.Type != ResetEventType || json.Unmarshal([]byte(ev.Data), &data) != nil || data.Topic != "t" || broker.ResetReason(data.Reason) != tc.reason {
				t.Fatalf("got %+v, want a %s reset with reason %s", ev, ResetEventType, tc.reason)
			}
			// Then the retained history, in order.
			for _, want := range ids[3:] {
				if got := er.next(wait); got.ID != want {
					t.Fatalf("after reset: got %+v, want %s", got, want)
				}
			}
		})
	}
	// The replayed history is counted with the reason of the reset before
	// it, as the resets are.
	want := map[broker.ResetReason]int{broker.ReasonTruncated: 3, broker.ReasonEpoch: 3, broker.ReasonUnknown: 6}
	e.m.mu.Lock()
	defer e.m.mu.Unlock()
	for r, n := range want {
		if e.m.replayedAfter[r] != n || e.m.resets[r] != n/3 {
			t.Errorf("reason %s: %d resets, %d events replayed after them; want %d and %d", r, e.m.resets[r], e.m.replayedAfter[r], n/3, n)
		}
	}
	if n := e.m.replayedAfter[""]; n != 0 {
		t.Errorf("%d events counted as resumed, want 0", n)
	}
}

func TestTopicBadRequests(t *testing.T) { eachMode(t, testTopicBadRequests) }

func testTopicBadRequests(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	e.h.MaxTopics = 3
	cases := []struct {
		name, query string
		hdr         []string
		status      int
		msg         string
	}{
		{"no topic", "", nil, 400, "missing topic"},
		{"empty topic", "topic=", nil, 400, "empty topic"},
		{"space in topic", "topic=a%20b", nil, 400, "printable ASCII"},
		{"control char in topic", "topic=a%01", nil, 400, "printable ASCII"},
		{"too long topic", "topic=" + strings.Repeat("x", 257), nil, 400, "limit is 256"},
		{"too many topics", "topic=a&topic=b&topic=c&topic=d", nil, 400, "too many topics"},
		{"bad query", "topic=%zz", nil, 400, "malformed query"},
		{"cursor with control char", "topic=a&lastEventId=x%01y", nil, 400, "Last-Event-ID"},
		{"cursor with space", "topic=a", []string{"Last-Event-ID", "a b"}, 400, "Last-Event-ID"},
		{"cursor too long", "topic=a", []string{"Last-Event-ID", strings.Repeat("1", e.h.maxCursorLen()+1)}, 400, "limit"},
		{"cursor non-ascii", "topic=a&lastEventId=%C3%A9", nil, 400, "Last-Event-ID"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := get(t, nil, e.srv.URL+"/events?"+tc.query, tc.hdr...)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.msg) {
				t.Fatalf("status %d body %q; want %d containing %q", resp.StatusCode, body, tc.status, tc.msg)
			}
		})
	}
	resp, err := http.Post(e.srv.URL+"/events?topic=a", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("POST: status %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if n := e.h.Connections(); n != 0 {
		t.Fatalf("%d connections left after bad requests", n)
	}
}

func TestTopicOnConnectRunsBeforeSubscribe(t *testing.T) {
	eachMode(t, testTopicOnConnectRunsBeforeSubscribe)
}

func testTopicOnConnectRunsBeforeSubscribe(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	e.h.OnConnect = func(r *http.Request) (int, http.Header, error) {
		if r.Header.Get("Authorization") != "Bearer good" {
			return http.StatusUnauthorized, nil, errors.New("missing or invalid token")
		}
		return DefaultOnConnect(r)
	}
	resp := get(t, nil, e.srv.URL+"/events?topic=a")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 401 || string(body) != "missing or invalid token\n" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	resp = get(t, nil, e.srv.URL+"/events?topic=a", "Authorization", "Bearer good")
	if resp.StatusCode != 200 {
		t.Fatalf("with token: %d", resp.StatusCode)
	}
}

// TestTopicSlowClientIsDropped: one client stops reading; it is disconnected
// while a reading client receives everything and the publisher never
// blocks.
func TestTopicSlowClientIsDropped(t *testing.T) { eachMode(t, testTopicSlowClientIsDropped) }

func testTopicSlowClientIsDropped(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{QueueLimit: 64, HistorySize: 10})
	e.h.WriteTimeout = 500 * time.Millisecond

	// The slow client: a raw connection that never reads after the headers.
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /events?topic=big HTTP/1.1\r\nHost: x\r\n\r\n")
	_, fast := e.open("topic=big", "")
	waitFor(t, wait, func() bool { return e.h.Connections() == 2 }, "two streams")

	payload := strings.Repeat("x", 32<<10)
	const n = 400 // ~13 MB: more than the socket buffers hold
	// The publisher keeps at most window events ahead of what the fast
	// client has read, well inside its queue limit: a client that keeps up
	// must never be dropped, however slowly the machine runs (on a loaded
	// CI machine an unpaced publisher once outran the fast reader by more
	// than the queue limit, and the test dropped it). The slow client's
	// queue still grows without bound, so it must be dropped.
	const window = 16
	var got atomic.Int64
	stop := make(chan struct{})
	defer close(stop)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			for int64(i)-got.Load() >= window {
				select {
				case <-stop:
					done <- errors.New("test ended")
					return
				case <-time.After(100 * time.Microsecond):
				}
			}
			if _, err := e.b.Publish(context.Background(), "big", broker.Message{Data: payload}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < n; i++ {
		if ev := fast.next(wait); len(ev.Data) != len(payload) {
			t.Fatalf("fast client event %d: %d bytes", i, len(ev.Data))
		}
		got.Add(1)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publisher: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("publisher blocked")
	}
	waitFor(t, wait, func() bool { return e.m.get(func(m *recMetrics) int { return m.closed["slow"] }) == 1 }, "slow client disconnected")
	waitFor(t, wait, func() bool { return e.h.Connections() == 1 }, "one stream left")
}

func TestTopicPausedReaderGetsEverythingInOrder(t *testing.T) {
	eachMode(t, testTopicPausedReaderGetsEverythingInOrder)
}

// A client that stops reading for a while (its socket buffers fill, so
// writes stop part-way and must be finished later) but stays within its
// queue limit and the write timeout gets every event once, in order, when
// it reads again — while a second, fast client keeps up all along.
func testTopicPausedReaderGetsEverythingInOrder(t *testing.T, m mode) {
	const n = 1000
	e := newTopicEnv(t, m, membroker.Config{QueueLimit: 2 * n, HistorySize: 10})
	e.h.WriteTimeout = 20 * time.Second

	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /events?topic=big HTTP/1.1\r\nHost: x\r\n\r\n")
	_, fast := e.open("topic=big", "")
	waitFor(t, wait, func() bool { return e.h.Connections() == 2 }, "two streams")

	// ~16 MB: far more than the socket buffers of one connection hold.
	payload := strings.Repeat("x", 16<<10)
	ids := make([]string, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			id, err := e.b.Publish(context.Background(), "big", broker.Message{Type: fmt.Sprint(i), Data: payload})
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = id
		}
	}()
	for i := range n {
		if ev := fast.next(wait); ev.Type != fmt.Sprint(i) {
			t.Fatalf("fast client: event %d has type %q", i, ev.Type)
		}
	}
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("publisher blocked")
	}

	// Now the paused client reads.
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	slow := newEventReader(t, resp.Body)
	for i := range n {
		ev := slow.next(wait)
		if ev.Type != fmt.Sprint(i) || ev.ID != ids[i] || len(ev.Data) != len(payload) {
			t.Fatalf("paused client: event %d: type %q id %q (want %q), %d bytes", i, ev.Type, ev.ID, ids[i], len(ev.Data))
		}
	}
	if got := e.m.get(func(m *recMetrics) int { return len(m.closed) }); got != 0 {
		t.Fatalf("a stream was closed: %v", e.m.closed)
	}
}

func TestTopicConcurrentWritersKeepOrder(t *testing.T) {
	eachMode(t, testTopicConcurrentWritersKeepOrder)
}

// Every writer of a stream at once — concurrent publishers (flushers),
// heartbeats every millisecond from the stream's goroutine, readers that
// pause now and then so that writes stop part-way — and every client still
// gets every event once, in publish order.
func testTopicConcurrentWritersKeepOrder(t *testing.T, m mode) {
	const (
		clients    = 20
		publishers = 4
		perPub     = 500
		total      = publishers * perPub
	)
	e := newTopicEnv(t, m, membroker.Config{QueueLimit: 2 * total, HistorySize: 10})
	e.h.Heartbeat = time.Millisecond
	readers := make([]*eventReader, clients)
	for i := range readers {
		_, readers[i] = e.open("topic=order", "")
	}
	waitFor(t, wait, func() bool { return e.h.Connections() == clients }, "all streams")

	payload := strings.Repeat("y", 4<<10)
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perPub {
				if _, err := e.b.Publish(context.Background(), "order", broker.Message{Data: payload}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	errs := make(chan error, clients)
	for i, r := range readers {
		go func() {
			last := 0
			for n := 0; n < total; n++ {
				if i%4 == 0 && n%200 == 0 {
					time.Sleep(20 * time.Millisecond) // let the socket fill
				}
				var ev Event
				select {
				case got, ok := <-r.events:
					if !ok {
						errs <- fmt.Errorf("client %d: stream ended after %d events", i, n)
						return
					}
					ev = got
				case <-time.After(wait):
					errs <- fmt.Errorf("client %d: no event %d within %v", i, n, wait)
					return
				}
				seq := ev.ID[strings.LastIndexByte(ev.ID, '-')+1:]
				var got int
				if _, err := fmt.Sscan(seq, &got); err != nil || got != last+1 {
					errs <- fmt.Errorf("client %d: event %d has id %q after seq %d", i, n, ev.ID, last)
					return
				}
				last = got
			}
			errs <- nil
		}()
	}
	wg.Wait()
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := e.m.get(func(m *recMetrics) int { return len(m.closed) }); got != 0 {
		t.Fatalf("a stream was closed: %v", e.m.closed)
	}
}

func TestTopicDrain(t *testing.T) { eachMode(t, testTopicDrain) }

func testTopicDrain(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	_, er := e.open("topic=a", "")
	id := e.publish("a", "", "x")
	er.next(wait)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.h.Drain(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	er.closed(wait)
	if r := er.dec.Retry(); r < time.Second || r > 3*time.Second {
		t.Fatalf("retry hint %v, want 1s..3s", r)
	}
	if er.dec.LastEventID() != id {
		t.Fatalf("last id %q, want %q", er.dec.LastEventID(), id)
	}
	if got := e.m.get(func(m *recMetrics) int { return m.closed["drain"] }); got != 1 {
		t.Fatalf("drain closes = %d", got)
	}
	resp := get(t, nil, e.srv.URL+"/events?topic=a")
	if resp.StatusCode != 503 {
		t.Fatalf("new stream while draining: %d", resp.StatusCode)
	}
}

func TestTopicBrokerCloseEndsStream(t *testing.T) { eachMode(t, testTopicBrokerCloseEndsStream) }

func testTopicBrokerCloseEndsStream(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	_, er := e.open("topic=a", "")
	waitFor(t, wait, func() bool { return e.h.Connections() == 1 }, "stream open")
	e.b.Close()
	er.closed(wait)
	if got := e.m.get(func(m *recMetrics) int { return m.closed["broker"] }); got != 1 {
		t.Fatalf("broker closes = %d", got)
	}
	resp := get(t, nil, e.srv.URL+"/events?topic=a")
	if resp.StatusCode != 503 {
		t.Fatalf("subscribe on a closed broker: %d", resp.StatusCode)
	}
}

func TestTopicHeartbeat(t *testing.T) { eachMode(t, testTopicHeartbeat) }

func testTopicHeartbeat(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	e.h.Heartbeat = 30 * time.Millisecond
	resp := get(t, nil, e.srv.URL+"/events?topic=a")
	lr := newLineReader(t, resp.Body)
	seen := 0
	for seen < 3 {
		l, ok := lr.next(wait)
		if !ok {
			t.Fatal("stream ended")
		}
		if l == ":" {
			seen++
		}
	}
}

// TestTopicHijackedResponseHead checks the response head a hijacked stream
// writes itself, and that a client disconnect is noticed without a write.
func TestTopicHijackedResponseHead(t *testing.T) {
	e := newTopicEnv(t, hijacked, membroker.Config{})
	e.h.OnConnect = func(r *http.Request) (int, http.Header, error) {
		_, h, _ := DefaultOnConnect(r)
		h.Set("X-Ok", "yes")
		h.Set("X-Bad", "a\r\nInjected: 1")
		h.Set("Content-Length", "10")
		return 200, h, nil
	}
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /events?topic=a HTTP/1.1\r\nHost: x\r\n\r\n")
	lr := newLineReader(t, conn)
	var head []string
	for {
		l, ok := lr.next(wait)
		if !ok {
			t.Fatal("stream ended in the head")
		}
		if l == "\r" || l == "" {
			break
		}
		head = append(head, strings.TrimSuffix(l, "\r"))
	}
	joined := strings.Join(head, "|")
	for _, want := range []string{"HTTP/1.1 200 OK", "Content-Type: text/event-stream; charset=utf-8", "Cache-Control: no-store", "X-Accel-Buffering: no", "X-Ok: yes", "Connection: close"} {
		if !strings.Contains(joined, want) {
			t.Errorf("head %q lacks %q", joined, want)
		}
	}
	for _, bad := range []string{"Injected", "Content-Length", "Transfer-Encoding"} {
		if strings.Contains(joined, bad) {
			t.Errorf("head %q has %q", joined, bad)
		}
	}
	if b := lr.block(wait); len(b) != 1 || !strings.HasPrefix(b[0], "id: ") {
		t.Fatalf("first block %q", b)
	}
	// The client leaves; with heartbeats off, only the connection watcher
	// can notice.
	conn.Close()
	waitFor(t, wait, func() bool { return e.h.Connections() == 0 }, "the stream to end after the client left")
	if got := e.m.get(func(m *recMetrics) int { return m.closed["client"] }); got != 1 {
		t.Fatalf("client closes = %d", got)
	}
}

// wrapped is a middleware's ResponseWriter that hides the original's
// interfaces but offers Unwrap, as the net/http docs ask.
type wrapped struct {
	http.ResponseWriter
	wrote int
}

func (w *wrapped) Write(p []byte) (int, error) { w.wrote += len(p); return w.ResponseWriter.Write(p) }
func (w *wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestTopicThroughMiddleware: a stream works behind a middleware that wraps
// the ResponseWriter (flushes and hijacking go through Unwrap).
func TestTopicThroughMiddleware(t *testing.T) { eachMode(t, testTopicThroughMiddleware) }

func testTopicThroughMiddleware(t *testing.T, m mode) {
	e := newTopicEnv(t, m, membroker.Config{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.h.ServeHTTP(&wrapped{ResponseWriter: w}, r)
	}))
	t.Cleanup(srv.Close)
	resp := get(t, nil, srv.URL+"/events?topic=mw")
	er := newEventReader(t, resp.Body)
	id := e.publish("mw", "", "through middleware")
	if ev := er.next(wait); ev.ID != id || ev.Data != "through middleware" {
		t.Fatalf("got %+v", ev)
	}
}

// accessLog is an ordinary middleware's ResponseWriter: it sees the status
// and counts the bytes, and offers Unwrap as the net/http docs ask.
type accessLog struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *accessLog) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *accessLog) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += n
	return n, err
}

func (w *accessLog) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestTopicDefaultComposesWithMiddleware: without Hijack a stream is an
// ordinary response. A middleware's wrapper sees its status and every byte
// the client got, and the middleware's code after the handler (an access
// log line) runs when the stream ends, not before. With Hijack, the
// documented bypass: the wrapper sees nothing and that code runs at once.
func TestTopicDefaultComposesWithMiddleware(t *testing.T) {
	for _, mode := range []mode{responseWriter, hijacked} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			b := membroker.New(membroker.Config{})
			t.Cleanup(func() { b.Close() })
			h := &TopicHandler{Broker: b, Heartbeat: -1, Logger: discardLogger()}
			mode.set(h)
			logged := make(chan accessLog, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				lw := &accessLog{ResponseWriter: w}
				h.ServeHTTP(lw, r)
				logged <- accessLog{status: lw.status, bytes: lw.bytes}
			}))
			t.Cleanup(srv.Close) // after the client's body is closed
			resp := get(t, nil, srv.URL+"/events?topic=a")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			cr := &countingReader{r: resp.Body}
			er := newEventReader(t, struct {
				io.Reader
				io.Closer
			}{cr, resp.Body})
			for i := range 3 {
				id, err := b.Publish(context.Background(), "a", broker.Message{Data: fmt.Sprint("event ", i)})
				if err != nil {
					t.Fatal(err)
				}
				if ev := er.next(wait); ev.ID != id {
					t.Fatalf("event %d: got %+v, want id %q", i, ev, id)
				}
			}
			if !mode.hijack {
				select {
				case l := <-logged:
					t.Fatalf("the middleware logged %+v while the stream was open", l)
				default:
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if err := h.Drain(ctx, 0); err != nil {
				t.Fatal(err)
			}
			er.closed(wait)
			var l accessLog
			select {
			case l = <-logged:
			case <-time.After(wait):
				t.Fatal("the middleware's code after the handler did not run")
			}
			switch {
			case mode.hijack && (l.status != 0 || l.bytes != 0):
				t.Errorf("hijacked: the middleware saw status %d and %d bytes, want nothing", l.status, l.bytes)
			case !mode.hijack && (l.status != http.StatusOK || int64(l.bytes) != cr.n.Load()):
				t.Errorf("the middleware saw status %d and %d bytes; the client got 200 and %d bytes", l.status, l.bytes, cr.n.Load())
			}
		})
	}
}
