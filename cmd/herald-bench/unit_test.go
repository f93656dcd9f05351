package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

func TestBucketsCoverValues(t *testing.T) {
	prev := -1
	for _, v := range []uint64{0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		i := bucketOf(v)
		if i < prev {
			t.Fatalf("bucketOf(%d) = %d, below the previous bucket %d", v, i, prev)
		}
		prev = i
		lo, w := bucketRange(i)
		if v < lo || v-lo >= w {
			t.Fatalf("value %d in bucket %d = [%d, %d+%d)", v, i, lo, lo, w)
		}
		if i >= histBuckets {
			t.Fatalf("bucket %d out of range", i)
		}
	}
	for range 100000 {
		v := rand.Uint64() >> rand.IntN(64)
		lo, w := bucketRange(bucketOf(v))
		if v < lo || v-lo >= w {
			t.Fatalf("value %d outside its bucket [%d, +%d)", v, lo, w)
		}
		if v >= 64 && float64(w)/float64(lo) > 1.0/32+1e-9 {
			t.Fatalf("bucket of %d too wide: %d at %d", v, w, lo)
		}
	}
}

func TestQuantiles(t *testing.T) {
	var h shardedHist
	for i := 1; i <= 1000; i++ {
		h.record(i, time.Duration(i)*time.Millisecond)
	}
	s := h.summary()
	if s.n != 1000 || s.max != time.Second {
		t.Fatalf("n=%d max=%v", s.n, s.max)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.9, 900 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, time.Second}} {
		got := s.quantile(c.q)
		if d := got - c.want; d < -c.want/30 || d > c.want/30 {
			t.Errorf("q%.2f = %v, want %v within 3%%", c.q, got, c.want)
		}
	}
	var empty shardedHist
	if p := empty.summary().percentiles(); p != (percentiles{}) {
		t.Errorf("empty histogram: %+v", p)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{0, 10, 64, 1000} {
		b := appendPayload(nil, 0xdeadbeef, 7, 123456, 987654321012, size)
		if len(b) < size {
			t.Fatalf("size %d: payload %d bytes", size, len(b))
		}
		p, ok := parsePayload(b)
		if !ok || p != (parsed{run: 0xdeadbeef, topic: 7, seq: 123456, sent: 987654321012}) {
			t.Fatalf("size %d: parsed %+v, %v from %q", size, p, ok, b)
		}
	}
	for _, bad := range []string{"", "hb1", "hb1 ", "hb1 zz 1 2 3 ", "hb1 a 1 2 3", "hb2 a 1 2 3 ", "hb1 a 1 x 3 ", "hello"} {
		if p, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parsePayload(%q) = %+v, want not ok", bad, p)
		}
	}
	b := appendPayload(nil, 1, 2, 3, 4, 64)
	if n := testing.AllocsPerRun(100, func() { _, _ = parsePayload(b) }); n != 0 {
		t.Errorf("parsePayload allocates %v times", n)
	}
}

func TestAppendQueryEscaped(t *testing.T) {
	got := string(appendQueryEscaped(nil, []byte("hb1 ab 1.x_-&=%\n")))
	if want := "hb1+ab+1.x_-%26%3D%25%0A"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

type recordSink struct{ got []string }

func (r *recordSink) event(_ *subscriber, data []byte) { r.got = append(r.got, string(data)) }

func TestReadEvents(t *testing.T) {
	long := strings.Repeat("y", 10000)
	stream := ":ok\n\n" +
		"id: 1\n\n" + // id-only block: no event
		"id: 2\ndata: first\n\n" +
		"event: x\r\ndata:second\r\n\r\n" + // CRLF, no space after the colon
		"data: a\ndata: b\n\n" + // only the first line counts
		": comment\ndata: " + long + "\n\n" +
		"data\n\n" + // a field named "data" without a colon is not "data:"
		"data: last\n\n" +
		"data: unterminated\n"
	var sink recordSink
	err := readEvents(bufio.NewReaderSize(strings.NewReader(stream), 16), &subscriber{}, &sink)
	if err == nil {
		t.Fatal("readEvents returned nil at EOF")
	}
	want := []string{"first", "second", "a", long, "last"}
	if len(sink.got) != len(want) {
		t.Fatalf("got %d events %q, want %d", len(sink.got), sink.got, len(want))
	}
	for i := range want {
		if sink.got[i] != want[i] {
			t.Errorf("event %d = %.20q, want %.20q", i, sink.got[i], want[i])
		}
	}
}

func TestReadEventsNoAllocs(t *testing.T) {
	// 99 events over topics 0, 1, 2 (33 each); the subscriber follows 2
	// and 0 (-topics 3, -sub-topics 2, first topic 2): 1 is foreign.
	var buf bytes.Buffer
	for i := range 99 {
		buf.WriteString("id: x\ndata: ")
		buf.Write(appendPayload(nil, 1, i%3, uint64(i/3+1), 5, 64))
		buf.WriteString("\n\n")
	}
	data := buf.Bytes()
	r := &runner{runID: 1, t0: time.Now(), cfg: config{topics: 3}}
	s := &subscriber{first: 2, topics: []topicState{{seen: make(bitset, 16)}, {seen: make(bitset, 16)}}}
	br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
	_ = readEvents(br, s, r) // warm up: the first-line buffer
	n := testing.AllocsPerRun(20, func() {
		for k := range s.topics {
			clear(s.topics[k].seen)
			s.topics[k] = topicState{seen: s.topics[k].seen}
		}
		*s = subscriber{first: s.first, topics: s.topics}
		br.Reset(bytes.NewReader(data))
		_ = readEvents(br, s, r)
	})
	if n > 2 { // the copy buffer for the first data line, per call, not per event
		t.Errorf("readEvents allocated %v times for 99 events", n)
	}
	for k, ts := range s.topics {
		if ts.unique != 33 || ts.dup != 0 || ts.reorder != 0 || ts.maxSeq != 33 {
			t.Errorf("followed topic %d: unique %d dup %d reorder %d max %d, want 33 0 0 33", k, ts.unique, ts.dup, ts.reorder, ts.maxSeq)
		}
	}
	if s.foreign != 33 || s.received != 66 {
		t.Errorf("foreign %d received %d, want 33 66", s.foreign, s.received)
	}
}

func TestSubscriberTopicState(t *testing.T) {
	// -topics 5, -sub-topics 3, subscriber 3: topics 3, 4, 0.
	s := &subscriber{first: 3, topics: make([]topicState, 3)}
	for topic, want := range map[int]int{3: 0, 4: 1, 0: 2, 1: -1, 2: -1, 5: -1, -1: -1, 8: -1} {
		got := s.topicState(topic, 5)
		switch {
		case want < 0 && got != nil:
			t.Errorf("topic %d: followed, want not", topic)
		case want >= 0 && got != &s.topics[want]:
			t.Errorf("topic %d: state %p, want topics[%d]", topic, got, want)
		}
	}
	// -sub-topics = -topics: every topic, each its own state.
	all := &subscriber{first: 2, topics: make([]topicState, 4)}
	seen := map[*topicState]bool{}
	for topic := range 4 {
		if ts := all.topicState(topic, 4); ts == nil || seen[ts] {
			t.Errorf("topic %d: %p", topic, ts)
		} else {
			seen[ts] = true
		}
	}
	u, err := streamURL("http://h:1/", "/events", "a b", "c")
	if err != nil || u.String() != "http://h:1/events?topic=a+b&topic=c" {
		t.Errorf("streamURL: %v %v", u, err)
	}
}

func TestBitset(t *testing.T) {
	var b bitset
	for _, i := range []uint64{5, 64, 1000, 5} {
		_ = b.set(i)
	}
	if !b.set(1000) || !b.set(64) || b.set(63) || !b.set(5) {
		t.Error("bitset lost or invented a bit")
	}
}

func TestScrubErr(t *testing.T) {
	got := scrubErr("dial tcp 127.0.0.1:5555->127.0.0.1:8080: connect: connection refused")
	if got != "dial tcp connect: connection refused" {
		t.Errorf("got %q", got)
	}
}

func TestCPUReaders(t *testing.T) {
	end := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(end) {
	}
	if toolCPU() <= 0 {
		t.Error("toolCPU() = 0 after busy work")
	}
	c, err := procCPU(os.Getpid())
	if err != nil || c <= 0 {
		t.Errorf("procCPU(self) = %v, %v", c, err)
	}
	if m, err := machineCPU(); err != nil || m <= 0 {
		t.Errorf("machineCPU() = %v, %v", m, err)
	}
	if _, err := procCPU(-1); err == nil {
		t.Error("procCPU(-1) did not fail")
	}
}

func TestAppendNDJSONEvent(t *testing.T) {
	ev := pubEvent{topic: `t"1\`, data: []byte("hb1 a\x01\n\"é"), key: "k-1"}
	b := appendNDJSONEvent(nil, ev, "ty")
	b = appendNDJSONEvent(b, pubEvent{topic: "t2", data: []byte("x")}, "")
	lines := strings.Split(string(b), "\n")
	if len(lines) != 3 || lines[2] != "" {
		t.Fatalf("want two lines ending in LF: %q", b)
	}
	var got struct {
		Topic, Event, Data string
		Key                *string `json:"idempotency_key"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("%q: %v", lines[0], err)
	}
	if got.Topic != ev.topic || got.Event != "ty" || got.Data != string(ev.data) || got.Key == nil || *got.Key != "k-1" {
		t.Errorf("decoded %+v from %q", got, lines[0])
	}
	if want := `{"topic":"t2","data":"x"}`; lines[1] != want {
		t.Errorf("no event type, no key: %s, want %s", lines[1], want)
	}
}

func TestParseBatchAnswer(t *testing.T) {
	var ans batchAnswer
	errs := make([]error, 3)
	body := `{"results":[{"id":"1-0"},{"status":503,"error":"broker down"},{"id":"1-1"}]}`
	if err := parseBatchAnswer(207, []byte(body), &ans, errs); err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[2] != nil || errs[1] == nil || errs[1].Error() != "publish: status 503: broker down" {
		t.Errorf("207: %v", errs)
	}
	// The next answer reuses the results: nothing of the 503 may remain.
	if err := parseBatchAnswer(200, []byte(`{"results":[{"id":"a"},{"id":"b"},{"id":"c"}]}`), &ans, errs); err != nil || errs[1] != nil {
		t.Errorf("200 after 207: %v %v", err, errs)
	}
	for _, c := range []struct {
		status int
		body   string
		want   string
	}{
		{400, "missing topic\n", "publish: status 400: missing topic"},                                 // refserver: no batches
		{200, `{"results":[{"id":"a"}]}`, "publish: status 200: 1 results for 3 events"},               // too few results
		{200, `{"id":"a"}`, "publish: status 200: 0 results for 3 events"},                             // a single-event answer
		{503, `{"error":"broker unavailable"}`, `publish: status 503: {"error":"broker unavailable"}`}, // no results at all
	} {
		err := parseBatchAnswer(c.status, []byte(c.body), &ans, errs)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("status %d %q: %v, want %q", c.status, c.body, err, c.want)
		}
	}
	// A common failure with one result per event: each event's own.
	if err := parseBatchAnswer(503, []byte(`{"results":[{"status":503,"error":"x"},{"status":503,"error":"x"},{"status":503,"error":"x"}]}`), &ans, errs); err != nil || errs[0] == nil || errs[2] == nil {
		t.Errorf("503 with results: %v %v", err, errs)
	}
}

func TestParseFlagsNew(t *testing.T) {
	for _, args := range [][]string{{"-batch", "0"}, {"-batch", "-2"}} {
		_, err := parseFlags(append([]string{"-url", "http://x"}, args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-batch") {
			t.Errorf("%q: %v, want an error naming -batch", args, err)
		}
	}
	for _, args := range [][]string{{"-sub-topics", "0"}, {"-topics", "3", "-sub-topics", "4"}} {
		_, err := parseFlags(append([]string{"-url", "http://x"}, args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "-sub-topics") {
			t.Errorf("%q: %v, want an error naming -sub-topics", args, err)
		}
	}
	c, err := parseFlags([]string{"-url", "http://x"}, io.Discard)
	if err != nil || c.batch != 1 || c.subTopics != 1 || c.idempotent {
		t.Errorf("defaults: batch %d sub-topics %d idempotent %v, %v", c.batch, c.subTopics, c.idempotent, err)
	}
	if c, err := parseFlags([]string{"-url", "http://x", "-topics", "8", "-sub-topics", "8"}, io.Discard); err != nil || c.subTopics != 8 {
		t.Errorf("-sub-topics 8 of 8: %v", err)
	}
}

func TestIdempotencyKey(t *testing.T) {
	if got := idempotencyKey(0xdeadbeef, 7, 123); got != "deadbeef-7-123" {
		t.Errorf("got %q", got)
	}
	if k := idempotencyKey(0xffffffff, 1<<30, 1<<63); len(k) > 128 || strings.ContainsAny(k, " \t") {
		t.Errorf("key %q: want at most 128 printable characters without spaces", k)
	}
}

func TestReadEventsHeartbeats(t *testing.T) {
	// Comment lines count as heartbeats on a sampled stream, and only
	// until the idle phase ends; events still reach the sink.
	stream := ":\n\n" + ": ping\n\n" + "data: x\n\n" + ":\r\n\r\n"
	hb := newHBSampler(time.Now(), 2*time.Second)
	s := &subscriber{hb: &hbStream{sampler: hb}}
	var sink recordSink
	_ = readEvents(bufio.NewReader(strings.NewReader(stream)), s, &sink)
	if s.hb.n != 3 || len(sink.got) != 1 || sink.got[0] != "x" {
		t.Errorf("heartbeats %d, events %q; want 3 and [x]", s.hb.n, sink.got)
	}
	if n := testing.AllocsPerRun(100, s.hb.beat); n != 0 {
		t.Errorf("a heartbeat allocates %v times", n)
	}
	hb.close()
	before := s.hb.n
	_ = readEvents(bufio.NewReader(strings.NewReader(stream)), s, &sink)
	if s.hb.n != before {
		t.Errorf("%d heartbeats counted after the idle phase", s.hb.n-before)
	}
	r := hb.summarize([]*hbStream{s.hb})
	if r.Streams != 1 || r.Seen != uint64(before) || r.First.N != 1 || r.Gap.N != uint64(before-1) || r.IntervalMs != 2000 || r.ToleranceMs != 1000 {
		t.Errorf("summary %+v", r)
	}
	if hbTolerance(30*time.Second) != 3*time.Second || hbTolerance(200*time.Millisecond) != time.Second {
		t.Errorf("tolerance of 30s %v, of 200ms %v", hbTolerance(30*time.Second), hbTolerance(200*time.Millisecond))
	}
}
