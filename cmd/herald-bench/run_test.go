package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fanout is a minimal SSE fan-out server for the tests; deliver decides
// what each subscriber gets for one published payload (nil: exactly it).
type fanout struct {
	mu      sync.Mutex
	subs    map[string][]chan string
	deliver func(data string) []string
	closed  chan struct{}
	heldMu  sync.Mutex
	held    map[int]string // used by one test's deliver, per topic

	// fail, when set, decides the failure (status, message) of an event
	// of an NDJSON batch; status 0: published.
	fail func(topic, data string) (int, string)
	// alsoTo delivers a topic's events to another topic's subscribers too.
	alsoTo map[string]string
	// formOnly refuses batches like refserver, which knows only forms.
	formOnly bool
	// What the publish requests carried: events per request and
	// idempotency keys (header, form field or NDJSON field).
	reqMu   sync.Mutex
	batches []int
	keys    []string
}

func (f *fanout) publishOne(topic, data string) {
	out := []string{data}
	if f.deliver != nil {
		out = f.deliver(data)
	}
	f.mu.Lock()
	for _, ch := range slices.Concat(f.subs[topic], f.subs[f.alsoTo[topic]]) {
		for _, d := range out {
			ch <- d
		}
	}
	f.mu.Unlock()
}

func (f *fanout) note(events int, keys ...string) {
	f.reqMu.Lock()
	f.batches = append(f.batches, events)
	for _, k := range keys {
		if k != "" {
			f.keys = append(f.keys, k)
		}
	}
	f.reqMu.Unlock()
}

// publishBatch serves an NDJSON batch like herald: one result per event;
// 200, 207, or the failures' common status.
func (f *fanout) publishBatch(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	type res struct {
		ID     string `json:"id,omitempty"`
		Status int    `json:"status,omitempty"`
		Error  string `json:"error,omitempty"`
	}
	var results []res
	var keys []string
	ok, common := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		var ev struct {
			Topic string `json:"topic"`
			Event string `json:"event"`
			Data  string `json:"data"`
			Key   string `json:"idempotency_key"`
		}
		st, msg := 0, ""
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Topic == "" {
			st, msg = http.StatusBadRequest, fmt.Sprintf("bad line %q", line)
		} else if f.fail != nil {
			st, msg = f.fail(ev.Topic, ev.Data)
		}
		keys = append(keys, ev.Key)
		if st != 0 {
			results = append(results, res{Status: st, Error: msg})
			if common == 0 {
				common = st
			} else if common != st {
				common = -1
			}
			continue
		}
		f.publishOne(ev.Topic, ev.Data)
		results = append(results, res{ID: "1"})
		ok++
	}
	f.note(len(results), keys...)
	status := http.StatusOK
	switch {
	case ok == len(results):
	case ok > 0 || common < 0:
		status = http.StatusMultiStatus
	default:
		status = common
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string][]res{"results": results})
}

func newFanout() *fanout {
	return &fanout{subs: map[string][]chan string{}, closed: make(chan struct{})}
}

func (f *fanout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/events":
		ch := make(chan string, 4096)
		f.mu.Lock()
		for _, topic := range r.URL.Query()["topic"] {
			f.subs[topic] = append(f.subs[topic], ch)
		}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte(":ok\n\n"))
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-f.closed:
				return
			case d := <-ch:
				fmt.Fprintf(w, "id: 1\ndata: %s\n\n", d)
				w.(http.Flusher).Flush()
			}
		}
	case "/publish":
		if r.Header.Get("Content-Type") == "application/x-ndjson" && !f.formOnly {
			f.publishBatch(w, r)
			return
		}
		if err := r.ParseForm(); err != nil || r.PostForm.Get("topic") == "" {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		f.note(1, r.Header.Get("Idempotency-Key"), r.PostForm.Get("idempotency_key"))
		f.publishOne(r.PostForm.Get("topic"), r.PostForm.Get("data"))
		_, _ = w.Write([]byte(`{"id":"1"}`))
	case "/metrics":
		_, _ = w.Write([]byte("# HELP x\nprocess_resident_memory_bytes 1.2345e+07\n"))
	default:
		http.NotFound(w, r)
	}
}

func startFanout(t *testing.T, f *fanout) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		close(f.closed)
		srv.Close()
	})
	return srv.URL
}

func testConfig(urls ...string) config {
	return config{urls: urls, eventsPath: "/events", publishPath: "/publish", subs: 6, topics: 2, events: 40,
		publishers: 2, payload: 80, publishVia: "http", connectConcurrency: 4, connectTimeout: 5 * time.Second,
		sourceIPs: 1, drainTimeout: time.Second, timeout: 30 * time.Second, quiet: true}
}

func TestRunComplete(t *testing.T) {
	a, b := startFanout(t, newFanout()), startFanout(t, newFanout())
	cfg := testConfig(a, b)
	cfg.topics = 1
	cfg.publishers = 1
	cfg.publishURL = a + "/publish" // only replica a gets events: b's subscribers lose them all
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 6 || res.Published != 40 || res.PublishErrors != 0 || res.Expected != 240 {
		t.Fatalf("connected %d published %d (%d errors) expected %d", res.Connected, res.Published, res.PublishErrors, res.Expected)
	}
	// Subscribers 0, 2, 4 are on a; 1, 3, 5 on b, which never hears of the events.
	if res.Delivered != 120 || res.Lost != 120 || res.CompleteSubs != 3 || res.IncompleteSubs != 3 {
		t.Errorf("delivered %d lost %d complete %d incomplete %d", res.Delivered, res.Lost, res.CompleteSubs, res.IncompleteSubs)
	}
	if res.Latency.N != 120 || res.Latency.Max <= 0 || res.Latency.P50 > res.Latency.P99 {
		t.Errorf("latency %+v", res.Latency)
	}
	// From the first dial to the last response head: at least the
	// slowest single connect.
	if res.ConnectAll <= 0 || res.ConnectAll < res.Connect.Max {
		t.Errorf("connect_all_ms %v, slowest connect %v ms", res.ConnectAll, res.Connect.Max)
	}
	if res.RSSBefore != 12345000 || res.MemSource == "" {
		t.Errorf("memory from /metrics: %d (%s)", res.RSSBefore, res.MemSource)
	}
}

func TestRunDetectsFaults(t *testing.T) {
	f := newFanout()
	f.held = map[int]string{}
	f.deliver = func(data string) []string {
		p, _ := parsePayload([]byte(data))
		switch p.seq {
		case 3: // duplicated
			return []string{data, data}
		case 5: // lost
			return nil
		case 7: // held back until after 8: one reordering
			f.heldMu.Lock()
			f.held[p.topic] = data
			f.heldMu.Unlock()
			return nil
		case 8:
			f.heldMu.Lock()
			defer f.heldMu.Unlock()
			return []string{data, f.held[p.topic], "not a bench payload"}
		}
		return []string{data}
	}
	u := startFanout(t, f)
	cfg := testConfig(u)
	cfg.events = 20 // 10 per topic, 2 topics, 3 subscribers each
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 20 || res.Expected != 60 {
		t.Fatalf("published %d expected %d", res.Published, res.Expected)
	}
	if res.Lost != 6 || res.Duplicated != 6 || res.Reordered != 6 || res.OtherEvents != 6 || res.IncompleteSubs != 6 {
		t.Errorf("lost %d dup %d reordered %d other %d incomplete %d; want 6 each",
			res.Lost, res.Duplicated, res.Reordered, res.OtherEvents, res.IncompleteSubs)
	}
}

func TestRunConnectErrorsAndRate(t *testing.T) {
	u := startFanout(t, newFanout())
	cfg := testConfig(u)
	cfg.eventsPath = "/nope"
	cfg.events = 0
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 0 || res.ConnectErrors != 6 || len(res.Errors) == 0 || !strings.Contains(res.Errors[0], "status 404") {
		t.Errorf("connected %d errors %d %q", res.Connected, res.ConnectErrors, res.Errors)
	}

	cfg = testConfig(u)
	cfg.events = 0
	cfg.rate = 50
	cfg.duration = 300 * time.Millisecond
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	// 50/s for 0.3 s: about 15 events; the pacing must keep it far from "as fast as possible".
	if res.Published < 5 || res.Published > 30 || res.Lost != 0 {
		t.Errorf("rate 50/s for 0.3s published %d, lost %d", res.Published, res.Lost)
	}
}

func TestRealMainJSONAndCompare(t *testing.T) {
	u := startFanout(t, newFanout())
	var out, errb bytes.Buffer
	code := realMain([]string{"-url", u, "-subs", "2", "-events", "5", "-scenario", "S1", "-target", "x", "-settle", "0s"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res result
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, out.String())
	}
	if res.Delivered != 10 || res.Scenario != "S1" || !strings.Contains(out.String(), "deliveries/s") {
		t.Errorf("summary %+v\n%s", res, out.String())
	}

	file := t.TempDir() + "/r.jsonl"
	base := result{Scenario: "S1", Target: "refserver", Published: 1, DeliveriesPerS: 1000, Subs: 1000, ConnectAll: 1000}
	other := result{Scenario: "S1", Target: "herald", Published: 1000, Delivered: 2000, DeliveriesPerS: 900,
		ProcServerCPU: 0.05, ProcRedisCPU: 0.01, Subs: 1000, ConnectAll: 1500,
		Heartbeats: &hbResult{IntervalMs: 30000, ToleranceMs: 3000, Streams: 200, ObservedMaxMs: 38000, Late: 1, Overdue: 2,
			Gap: percentiles{N: 50, P99: 30012}}}
	var buf bytes.Buffer
	for _, r := range []result{other, base} {
		b, _ := json.Marshal(r)
		buf.Write(append(b, '\n'))
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := realMain([]string{"-compare", file}, &out, &errb); code != 0 {
		t.Fatalf("compare exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "| S1 | deliveries/s | 1000 | 900 | 0.90× |") ||
		!strings.Contains(out.String(), "| S1 | server CPU µs/event | — | 50.0 | — |") ||
		!strings.Contains(out.String(), "| S1 | Redis CPU ns/delivery | — | 5000 | — |") ||
		!strings.Contains(out.String(), "| S1 | connect all ms | 1000 | 1500 | 1.50× |") ||
		!strings.Contains(out.String(), "| S1 | heartbeat gap p99 ms | — | 30012 | — |") ||
		!strings.Contains(out.String(), "| S1 | heartbeats late+overdue | — | 3 | — |") {
		t.Errorf("comparison:\n%s", out.String())
	}
	if code := realMain([]string{"-subs", "1"}, &out, &errb); code != 2 {
		t.Errorf("missing -url: exit %d, want 2", code)
	}
}

func TestRunBatch(t *testing.T) {
	f := newFanout()
	f.fail = func(topic, data string) (int, string) {
		if p, _ := parsePayload([]byte(data)); p.topic == 1 && p.seq == 5 {
			return http.StatusServiceUnavailable, "broker down"
		}
		return 0, ""
	}
	u := startFanout(t, f)
	cfg := testConfig(u)
	cfg.events = 41 // publisher 0 (topic 0): 21 = 5 batches of 4 and one of 1; publisher 1 (topic 1): 20
	cfg.batch = 4
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	// Topic 1's event 5 failed: not published, not expected, not lost.
	if res.Published != 40 || res.PublishErrors != 1 || res.Expected != 3*21+3*19 || res.Batch != 4 {
		t.Fatalf("published %d (%d errors) expected %d batch %d %q", res.Published, res.PublishErrors, res.Expected, res.Batch, res.Errors)
	}
	if res.Delivered != res.Expected || res.Lost != 0 || res.CompleteSubs != 6 || res.Reordered != 0 {
		t.Errorf("delivered %d lost %d reordered %d complete %d", res.Delivered, res.Lost, res.Reordered, res.CompleteSubs)
	}
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "1x publish: publish: status 503: broker down") {
		t.Errorf("errors %q", res.Errors)
	}
	slices.Sort(f.batches)
	if want := []int{1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}; !slices.Equal(f.batches, want) {
		t.Errorf("events per request %v, want %v", f.batches, want)
	}
	if res.PublishRTT.N != 11 {
		t.Errorf("publish RTT recorded %d times, want once per request (11)", res.PublishRTT.N)
	}
	if len(f.keys) != 0 {
		t.Errorf("keys sent without -idempotent: %q", f.keys[:1])
	}

	// -rate counts events, not requests: 50/s for 0.3 s is about 15
	// events, in batches of 5.
	f.batches = nil
	cfg.events = 0
	cfg.rate = 50
	cfg.duration = 300 * time.Millisecond
	cfg.batch = 5
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published < 5 || res.Published > 30 || res.Lost != 0 {
		t.Errorf("rate 50/s for 0.3s in batches of 5: published %d, lost %d", res.Published, res.Lost)
	}

	// A server that knows only the single-event form (refserver): every
	// event of a batch fails with the request.
	fo := newFanout()
	fo.formOnly = true
	plain := startFanout(t, fo)
	cfg = testConfig(plain)
	cfg.batch = 3
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 0 || res.PublishErrors != 40 || len(res.Errors) == 0 || !strings.Contains(res.Errors[0], "status 400") {
		t.Errorf("form-only server: published %d errors %d %q", res.Published, res.PublishErrors, res.Errors)
	}
}

func TestRunIdempotent(t *testing.T) {
	for _, batch := range []int{1, 4} {
		f := newFanout()
		u := startFanout(t, f)
		cfg := testConfig(u)
		cfg.idempotent = true
		cfg.batch = batch
		res, err := run(context.Background(), cfg, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Published != 40 || res.Lost != 0 || !res.Idempotent || res.Batch != batch {
			t.Fatalf("batch %d: published %d lost %d idempotent %v batch %d: %q", batch, res.Published, res.Lost, res.Idempotent, res.Batch, res.Errors)
		}
		// 20 events per topic, each with its own key <run>-<topic>-<seq>.
		seen := map[string]bool{}
		var run string
		for _, k := range f.keys {
			var topic, seq int
			var r string
			parts := strings.Split(k, "-")
			if len(parts) != 3 {
				t.Fatalf("key %q: want <run>-<topic>-<seq>", k)
			}
			r = parts[0]
			if _, err := fmt.Sscanf(parts[1]+" "+parts[2], "%d %d", &topic, &seq); err != nil || topic > 1 || seq < 1 || seq > 20 {
				t.Errorf("key %q: topic %d seq %d", k, topic, seq)
			}
			if run == "" {
				run = r
			} else if r != run {
				t.Errorf("keys of two runs: %q, %q", run, r)
			}
			if seen[k] {
				t.Errorf("key %q sent twice", k)
			}
			seen[k] = true
		}
		if len(seen) != 40 {
			t.Errorf("batch %d: %d distinct keys, want 40", batch, len(seen))
		}
		var out bytes.Buffer
		res.printTable(&out)
		if want := fmt.Sprintf("(batch %d, idempotency keys)", batch); !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunSubTopics(t *testing.T) {
	// 8 concurrent publishers, 1 subscriber following all 8 topics.
	f := newFanout()
	f.deliver = func(data string) []string {
		if p, _ := parsePayload([]byte(data)); p.topic == 5 && p.seq == 2 {
			return nil // one loss, on one topic
		}
		return []string{data}
	}
	u := startFanout(t, f)
	cfg := testConfig(u)
	cfg.subs, cfg.topics, cfg.subTopics, cfg.publishers, cfg.events = 1, 8, 8, 8, 80
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 80 || res.Expected != 80 || res.Delivered != 79 || res.Lost != 1 || res.Foreign != 0 || res.IncompleteSubs != 1 {
		t.Errorf("published %d expected %d delivered %d lost %d foreign %d incomplete %d",
			res.Published, res.Expected, res.Delivered, res.Lost, res.Foreign, res.IncompleteSubs)
	}
	if res.SubTopics != 8 {
		t.Errorf("summary sub_topics %d", res.SubTopics)
	}

	// 4 subscribers, 2 topics of 4 each (i, i+1 mod 4): each topic has 2
	// subscribers; every event of topic 0 is also sent on topic 2, where
	// subscribers 1 and 2 (topics 1, 2 and 2, 3) count it as foreign.
	f = newFanout()
	f.alsoTo = map[string]string{"t0": "t2"}
	u = startFanout(t, f)
	cfg = testConfig(u)
	cfg.topicPrefix = "t"
	cfg.subs, cfg.topics, cfg.subTopics, cfg.publishers, cfg.events = 4, 4, 2, 2, 40
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 40 || res.Expected != 80 || res.Delivered != 80 || res.Lost != 0 || res.CompleteSubs != 4 || res.Foreign != 20 {
		t.Errorf("4 subs of 2 topics: published %d expected %d delivered %d lost %d complete %d foreign %d",
			res.Published, res.Expected, res.Delivered, res.Lost, res.CompleteSubs, res.Foreign)
	}
	var out bytes.Buffer
	res.printTable(&out)
	if !strings.Contains(out.String(), "(4 topics, 2 per subscriber,") {
		t.Errorf("table:\n%s", out.String())
	}
}
