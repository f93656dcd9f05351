package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// newMemServer is a server on the real in-process broker.
func newMemServer(t *testing.T, mutate func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.MaxEventBytes = 100
	cfg.MaxBodyBytes = 4000
	cfg.MaxBatch = 20
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(t.Context(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.broker.Close() })
	return s
}

type answer struct {
	ID      string        `json:"id"`
	Error   string        `json:"error"`
	Results []batchResult `json:"results"`
}

func post(t *testing.T, h http.Handler, ct, body string, header ...string) (*httptest.ResponseRecorder, answer) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "http://example.com/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", ct)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	req.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var a answer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer %q is not JSON: %v", rec.Body, err)
	}
	return rec, a
}

// logOf reads a topic's whole log from the broker: IDs and data.
func logOf(t *testing.T, b broker.Broker, topic string) (ids, data []string) {
	t.Helper()
	sub, err := b.Subscribe(t.Context(), []string{topic}, broker.Cursor{topic: "0"}) // unknown cursor: reset, then everything
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	r := brokertest.NewReader(sub)
	r.Until(time.Second, func(r *brokertest.Reader) bool { return r.HasPosition(topic) })
	for _, e := range r.Items[topic] {
		if e.Kind == broker.KindEvent {
			ids, data = append(ids, e.ID), append(data, e.Data)
		}
	}
	return ids, data
}

func TestPublishIdempotencyKeyHTTP(t *testing.T) {
	s := newMemServer(t, nil)
	h := s.Handler()
	form := "application/x-www-form-urlencoded"
	rec, first := post(t, h, form, "topic=k&data=one", "Idempotency-Key", "abc-1")
	if rec.Code != 200 || first.ID == "" {
		t.Fatalf("first publish: %d %+v", rec.Code, first)
	}
	for _, c := range []struct {
		name, ct, body string
		header         []string
	}{
		{"header again", form, "topic=k&data=one", []string{"Idempotency-Key", "abc-1"}},
		{"structured-field string", form, "topic=k&data=one", []string{"Idempotency-Key", `"abc-1"`}},
		{"form field", form, "topic=k&data=one&idempotency_key=abc-1", nil},
		{"json field", "application/json", `{"topic":"k","data":"one","idempotency_key":"abc-1"}`, nil},
		{"header and equal field", form, "topic=k&data=one&idempotency_key=abc-1", []string{"Idempotency-Key", "abc-1"}},
	} {
		rec, a := post(t, h, c.ct, c.body, c.header...)
		if rec.Code != 200 || a.ID != first.ID {
			t.Errorf("%s: %d %+v, want 200 and the first publish's id %q", c.name, rec.Code, a, first.ID)
		}
	}
	for _, c := range []struct {
		name, body string
		header     []string
		status     int
		err        string
	}{
		{"conflict", "topic=k&data=two", []string{"Idempotency-Key", "abc-1"}, 422, "abc-1"},
		{"header and other field", "topic=k&data=one&idempotency_key=x", []string{"Idempotency-Key", "abc-1"}, 400, "differ"},
		{"two headers", "topic=k&data=one", []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, "2 times"},
		{"space in key", "topic=k&data=one", []string{"Idempotency-Key", "a b"}, 400, "idempotency key"},
		{"bad sf-string", "topic=k&data=one", []string{"Idempotency-Key", `"abc`}, 400, "Structured Field"},
		{"bad escape", "topic=k&data=one", []string{"Idempotency-Key", `"a\bc"`}, 400, "Structured Field"},
		{"empty quoted", "topic=k&data=one", []string{"Idempotency-Key", `""`}, 400, "empty"},
		{"long key", "topic=k&data=one&idempotency_key=" + strings.Repeat("k", 129), nil, 400, "limit is 128"},
		{"key twice in form", "topic=k&data=one&idempotency_key=a&idempotency_key=a", nil, 400, "2 times"},
	} {
		rec, a := post(t, h, form, c.body, c.header...)
		if rec.Code != c.status || !strings.Contains(a.Error, c.err) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, rec.Code, a.Error, c.status, c.err)
		}
	}
	// Another topic: an event of its own.
	rec, other := post(t, h, form, "topic=k2&data=one", "Idempotency-Key", "abc-1")
	if rec.Code != 200 || other.ID == first.ID {
		t.Errorf("same key, other topic: %d %+v", rec.Code, other)
	}
	if ids, _ := logOf(t, s.broker, "k"); fmt.Sprint(ids) != fmt.Sprint([]string{first.ID}) {
		t.Errorf("log of k %v, want only %q", ids, first.ID)
	}
	if got := counterValue(t, s.Metrics(), "herald_publish_errors_total", "422"); got != 1 {
		t.Errorf("herald_publish_errors_total{code=422} = %v, want 1", got)
	}
}

func TestPublishKeysOff(t *testing.T) {
	s := newMemServer(t, func(c *Config) { c.IdempotencyWindow = 0 })
	h := s.Handler()
	var ids []string
	for range 2 {
		rec, a := post(t, h, "application/x-www-form-urlencoded", "topic=off&data=one", "Idempotency-Key", "k")
		if rec.Code != 200 {
			t.Fatalf("%d %+v", rec.Code, a)
		}
		ids = append(ids, a.ID)
	}
	if ids[0] == ids[1] {
		t.Errorf("with --idempotency-window=0 a key still deduplicated: %v", ids)
	}
}

func TestPublishBatchHTTP(t *testing.T) {
	s := newMemServer(t, nil)
	h := s.Handler()
	body := strings.Join([]string{
		`{"topic":"ba","data":"a0"}`,
		``,
		`{"topic":"bc","event":"t","data":"c0","idempotency_key":"kc"}`,
		`not json`,
		`{"topic":"ba","data":"a1"} {"extra":1}`,
		`{"data":"no topic"}`,
		`{"topic":"ba","event":"herald.x","data":"x"}`,
		`{"topic":"ba","data":"` + strings.Repeat("x", 101) + `"}`,
		`{"topic":"ba","data":"a2","unknown":1}`,
		`{"topic":"bc","data":"c0-other","idempotency_key":"kc"}`,
		`{"topic":"bc","event":"t","data":"c0","idempotency_key":"kc"}`,
		`{"topic":"ba","data":"a1\nline 2"}`,
		"\r",
	}, "\n")
	rec, a := post(t, h, "application/x-ndjson", body)
	if rec.Code != http.StatusMultiStatus {
		t.Fatalf("status %d, want 207; %s", rec.Code, rec.Body)
	}
	want := []int{0, 0, 400, 400, 400, 400, 413, 400, 422, 0, 0} // 0: published
	if len(a.Results) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(a.Results), len(want), rec.Body)
	}
	for i, w := range want {
		r := a.Results[i]
		if w == 0 && (r.ID == "" || r.Status != 0 || r.Index != nil) || w != 0 && (r.Status != w || r.Error == "" || r.ID != "" || r.Index == nil || *r.Index != i) {
			t.Errorf("result %d: %+v, want status %d", i, r, w)
		}
	}
	if a.Results[9].ID != a.Results[1].ID {
		t.Errorf("the same key in one batch: ids %q and %q", a.Results[1].ID, a.Results[9].ID)
	}
	ids, data := logOf(t, s.broker, "ba")
	if fmt.Sprint(ids) != fmt.Sprint([]string{a.Results[0].ID, a.Results[10].ID}) || fmt.Sprintf("%q", data) != `["a0" "a1\nline 2"]` {
		t.Errorf("log of ba: %v %q", ids, data)
	}
	if got := counterValue(t, s.Metrics(), "herald_events_published_total", ""); got != 4 {
		t.Errorf("herald_events_published_total = %v, want 4 (per event)", got)
	}

	// A JSON array, every event valid: 200. Per-topic order is batch order.
	var events []string
	for i := range 20 {
		events = append(events, fmt.Sprintf(`{"topic":"arr%d","data":"%d"}`, i%2, i))
	}
	rec, a = post(t, h, "application/json", " ["+strings.Join(events, ",")+"]")
	if rec.Code != 200 || len(a.Results) != 20 {
		t.Fatalf("array: %d %s", rec.Code, rec.Body)
	}
	for k := range 2 {
		var wantIDs []string
		for i := k; i < 20; i += 2 {
			wantIDs = append(wantIDs, a.Results[i].ID)
		}
		if ids, _ := logOf(t, s.broker, fmt.Sprintf("arr%d", k)); fmt.Sprint(ids) != fmt.Sprint(wantIDs) {
			t.Errorf("arr%d: log %v, want %v", k, ids, wantIDs)
		}
	}

	for _, c := range []struct {
		name, ct, body string
		header         []string
		status         int
		err            string
	}{
		{"over --max-batch", "application/x-ndjson", strings.Repeat(`{"topic":"x"}`+"\n", 21), nil, 413, "--max-batch"},
		{"over --max-body-bytes", "application/json", "[" + strings.Repeat(`{"topic":"x","data":"`+strings.Repeat("y", 90)+`"},`, 50) + `{"topic":"x"}]`, nil, 413, "--max-body-bytes"},
		{"empty array", "application/json", "[]", nil, 400, "empty batch"},
		{"empty ndjson", "application/x-ndjson", "\n\n", nil, 400, "empty batch"},
		{"bad array", "application/json", `[{"topic":"x"},`, nil, 400, "bad JSON array"},
		{"header key on a batch", "application/x-ndjson", `{"topic":"x"}`, []string{"Idempotency-Key", "k"}, 400, "idempotency_key field"},
	} {
		rec, a := post(t, h, c.ct, c.body, c.header...)
		if rec.Code != c.status || !strings.Contains(a.Error, c.err) || a.Results != nil {
			t.Errorf("%s: %d %s, want %d with %q", c.name, rec.Code, rec.Body, c.status, c.err)
		}
	}
	// Every event failing alike: their common status; JSON Lines too.
	rec, a = post(t, h, "application/jsonl", `{"topic":"a b"}`+"\n"+`{}`)
	if rec.Code != 400 || len(a.Results) != 2 {
		t.Errorf("all invalid: %d %s, want 400 with 2 results", rec.Code, rec.Body)
	}
}

// TestPublishBatchBrokerDown: a batch the broker cannot take answers 503
// with Retry-After and every event's error.
func TestPublishBatchBrokerDown(t *testing.T) {
	fb := &fakeBroker{err: fmt.Errorf("%w: redis: connection refused", broker.ErrUnavailable)}
	h, m := newTestPublish(t, fb, nil)
	rec, a := post(t, h, "application/x-ndjson", `{"topic":"a"}`+"\n"+`{"topic":"b"}`)
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" || len(a.Results) != 2 || a.Results[1].Status != 503 {
		t.Fatalf("%d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if got := counterValue(t, m, "herald_publish_errors_total", "503"); got != 2 {
		t.Errorf("herald_publish_errors_total{code=503} = %v, want 2", got)
	}
}

// TestKeysEvictedMetric: keys the in-memory broker forgets early are
// counted for operators.
func TestKeysEvictedMetric(t *testing.T) {
	s := newMemServer(t, func(c *Config) { c.IdempotencyKeys = 2 })
	h := s.Handler()
	for i := range 5 {
		if rec, a := post(t, h, "application/x-www-form-urlencoded", "topic=ev&data=x", "Idempotency-Key", fmt.Sprint("k", i)); rec.Code != 200 {
			t.Fatalf("%d %+v", rec.Code, a)
		}
	}
	if got := counterValue(t, s.Metrics(), "herald_idempotency_keys_evicted_total", ""); got != 3 {
		t.Errorf("herald_idempotency_keys_evicted_total = %v, want 3", got)
	}
}

// TestBrokerMetrics: herald_broker_last_event_timestamp_seconds follows
// the last live event (0 before any).
func TestBrokerMetrics(t *testing.T) {
	s := newMemServer(t, nil)
	if got := counterValue(t, s.Metrics(), "herald_broker_last_event_timestamp_seconds", ""); got != 0 {
		t.Fatalf("before any event: %v, want 0", got)
	}
	before := float64(time.Now().UnixNano()) / 1e9
	if rec, a := post(t, s.Handler(), "application/x-www-form-urlencoded", "topic=m&data=x"); rec.Code != 200 {
		t.Fatalf("%d %+v", rec.Code, a)
	}
	after := float64(time.Now().UnixNano()) / 1e9
	if got := counterValue(t, s.Metrics(), "herald_broker_last_event_timestamp_seconds", ""); got < before || got > after {
		t.Errorf("after a publish at [%f, %f]: %f", before, after, got)
	}
}
