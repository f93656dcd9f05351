package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
)

const testAdminKey = "admin-key-0123456789"

func adminToken(t testing.TB, admin bool) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "ops", "herald": map[string]any{"subscribe": []string{"x"}, "admin": admin}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAdminAuth: who may use the admin API under each configuration.
func TestAdminAuth(t *testing.T) {
	type call struct {
		remote string // peer address
		bearer string
		want   int
	}
	const remote, local = "192.0.2.7:5555", "127.0.0.1:5555"
	cases := []struct {
		name   string
		mutate func(*Config)
		calls  []call
	}{
		{"nothing configured", nil, []call{
			{local, "", 200}, {"[::1]:5555", "", 200}, {remote, "", 403},
		}},
		{"admin-allow", func(c *Config) { c.AdminAllow = true }, []call{
			{remote, "", 200}, {local, "", 200},
		}},
		{"only the API key: still by address", func(c *Config) { c.APIKey = testAPIKey }, []call{
			{local, "", 200}, {remote, "", 403}, {remote, testAPIKey, 403},
		}},
		{"admin key", func(c *Config) { c.AdminKey = testAdminKey; c.APIKey = testAPIKey; c.AdminAllow = true }, []call{
			{remote, testAdminKey, 200}, {local, "", 401}, {remote, "wrong-admin-key-000", 401},
			{remote, testAPIKey, 401},
		}},
		{"tokens", func(c *Config) { withAuth(c); c.AdminKey = testAdminKey }, []call{
			{remote, "ADMIN", 200}, {remote, "NOTADMIN", 403}, {remote, testAdminKey, 200},
			{local, "", 401}, {remote, testAPIKey, 401},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemServer(t, tc.mutate)
			for _, c := range tc.calls {
				for _, path := range []string{"/api/nodes", "/api/topics?prefix=a", "/api/topics/a"} {
					req := httptest.NewRequest("GET", path, nil)
					req.RemoteAddr = c.remote
					switch c.bearer {
					case "":
					case "ADMIN":
						req.Header.Set("Authorization", "Bearer "+adminToken(t, true))
					case "NOTADMIN":
						req.Header.Set("Authorization", "Bearer "+adminToken(t, false))
					default:
						req.Header.Set("Authorization", "Bearer "+c.bearer)
					}
					rec := httptest.NewRecorder()
					s.Handler().ServeHTTP(rec, req)
					if rec.Code != c.want {
						t.Errorf("%s from %s with %q: %d %s, want %d", path, c.remote, c.bearer, rec.Code, rec.Body, c.want)
						continue
					}
					if !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
						t.Errorf("%s: Content-Type %q", path, rec.Header().Get("Content-Type"))
					}
					var body map[string]any
					if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
						t.Errorf("%s: not JSON: %s", path, rec.Body)
					}
					if c.want == 401 && rec.Header().Get("WWW-Authenticate") == "" {
						t.Errorf("%s: 401 without WWW-Authenticate", path)
					}
					if c.want >= 400 && body["error"] == "" {
						t.Errorf("%s: %d without an error message: %s", path, c.want, rec.Body)
					}
				}
			}
		})
	}
}

func TestAdminConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-key", "short"}, "--admin-key"},
		{[]string{"--admin-key", testAPIKey, "--api-key", testAPIKey}, "--admin-key"},
		{[]string{"--admin-key", testAdminKey, "--admin-key-file", "/nonexistent"}, "--admin-key-file"},
		{[]string{"--admin-key-file", "/nonexistent"}, "--admin-key-file"},
		{[]string{"--node-id", "has space"}, "--node-id"},
		{[]string{"--node-interval", "0s"}, "--node-interval"},
	} {
		_, err := ParseConfig(tc.args, envMap(nil), io.Discard)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

func TestAdminBadRequests(t *testing.T) {
	s := newMemServer(t, nil)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/api/topics/" + strings.Repeat("a", broker.MaxTopicLen+1), 400},
		{"GET", "/api/topics/a%20b", 400},
		{"GET", "/api/topics?limit=0", 400},
		{"GET", "/api/topics?limit=x", 400},
		{"GET", "/api/topics?prefix=" + strings.Repeat("a", broker.MaxTopicLen+1), 400},
		{"POST", "/api/nodes", 405},
		{"DELETE", "/api/topics/a", 405},
		{"GET", "/api/topics?limit=100000", 200},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want || !strings.Contains(rec.Header().Get("Content-Type"), "json") {
			t.Errorf("%s %s: %d %q %s, want %d", tc.method, tc.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body, tc.want)
		}
	}
}

// fleetServer starts a server named id with a fast node interval.
func fleetServer(t *testing.T, id string, mutate func(*Config)) *liveServer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DrainDelay = 0
	cfg.DrainTimeout = 10 * time.Second
	cfg.Heartbeat = time.Hour
	cfg.NodeID = id
	cfg.NodeInterval = 50 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	return runServer(t, cfg, Options{})
}

func (ls *liveServer) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := ls.client.Get(ls.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

type nodesReply struct {
	Nodes    []nodeRecord `json:"nodes"`
	Complete bool         `json:"complete"`
	Error    string       `json:"error"`
}

func (ls *liveServer) nodeIDs(t *testing.T) []string {
	var r nodesReply
	ls.getJSON(t, "/api/nodes", &r)
	var ids []string
	for _, n := range r.Nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

type topicReply struct {
	Topic       string            `json:"topic"`
	Subscribers int               `json:"subscribers"`
	Nodes       []nodeSubscribers `json:"nodes"`
	History     *topicHistory     `json:"history"`
	Complete    bool              `json:"complete"`
	Error       string            `json:"error"`
}

// TestFleetRedis runs the cluster view on three replicas sharing one Redis.
func TestFleetRedis(t *testing.T) {
	rds := testredis.Start(t)
	mutate := func(c *Config) { c.RedisURL = rds.URL() }
	a := fleetServer(t, "node-a", mutate)
	b := fleetServer(t, "node-b", mutate)
	c := fleetServer(t, "node-c", mutate)
	want := "node-a,node-b,node-c"
	waitFor(t, 10*time.Second, "three nodes in the view", func() bool {
		return strings.Join(a.nodeIDs(t), ",") == want && strings.Join(c.nodeIDs(t), ",") == want
	})

	// Subscribers: 2 on a, 1 on b, for topic "fleet.t"; 1 on c for "other".
	a.subscribe(t, "topic=fleet.t", "")
	a.subscribe(t, "topic=fleet.t&topic=other", "")
	b.subscribe(t, "topic=fleet.t", "")
	id1 := a.publish(t, "fleet.t", "", "one")
	id2 := b.publish(t, "fleet.t", "", "two")
	waitFor(t, 10*time.Second, "subscriber counts", func() bool {
		var r topicReply
		c.getJSON(t, "/api/topics/fleet.t", &r)
		return r.Subscribers == 3 && len(r.Nodes) == 2
	})
	var r topicReply
	c.getJSON(t, "/api/topics/fleet.t", &r)
	if !r.Complete || r.Nodes[0] != (nodeSubscribers{"node-a", 2}) || r.Nodes[1] != (nodeSubscribers{"node-b", 1}) {
		t.Errorf("topic view: %+v", r)
	}
	if r.History == nil || r.History.Length != 2 || r.History.FirstID != id1 || r.History.LastID != id2 || r.History.Epoch == "" ||
		!strings.HasPrefix(id1, r.History.Epoch) {
		t.Errorf("history: %+v, ids %s %s", r.History, id1, id2)
	}
	var never topicReply
	c.getJSON(t, "/api/topics/never.used", &never)
	if never.Subscribers != 0 || len(never.Nodes) != 0 || never.History == nil || never.History.Length != 0 || never.History.LastID == "" {
		t.Errorf("unused topic: %+v", never)
	}

	var list struct {
		Topics   []topicSummary `json:"topics"`
		Complete bool           `json:"complete"`
	}
	b.getJSON(t, "/api/topics", &list)
	if len(list.Topics) != 2 || list.Topics[0] != (topicSummary{"fleet.t", 3, 2}) || list.Topics[1] != (topicSummary{"other", 1, 1}) || !list.Complete {
		t.Errorf("busiest: %+v", list)
	}
	b.getJSON(t, "/api/topics?prefix=oth", &list)
	if len(list.Topics) != 1 || list.Topics[0].Topic != "other" {
		t.Errorf("prefix oth: %+v", list)
	}
	b.getJSON(t, "/api/topics?limit=1", &list)
	if len(list.Topics) != 1 || list.Topics[0].Topic != "fleet.t" {
		t.Errorf("limit 1: %+v", list)
	}

	// Rates and latency: a's record shows its deliveries.
	waitFor(t, 10*time.Second, "node-a's totals", func() bool {
		var n nodesReply
		c.getJSON(t, "/api/nodes", &n)
		for _, rec := range n.Nodes {
			if rec.ID == "node-a" {
				return rec.DeliveredTotal >= 4 && rec.Connections == 2 && rec.Topics == 2 && rec.Broker.Up &&
					rec.Version != "" && rec.Address != "" && !rec.Started.IsZero()
			}
		}
		return false
	})

	// A drained replica leaves at once; the others stay.
	b.stop()
	<-b.done
	b.done <- nil
	ids := strings.Join(a.nodeIDs(t), ",")
	if ids != "node-a,node-c" {
		t.Errorf("after node-b drained: %s", ids)
	}
}

// TestFleetMemory: with the in-process broker the fleet is the process.
func TestFleetMemory(t *testing.T) {
	a := fleetServer(t, "", nil)
	ids := a.nodeIDs(t)
	host, _ := os.Hostname()
	if len(ids) != 1 || ids[0] != host+":"+strings.TrimPrefix(a.URL, "http://127.0.0.1:") {
		t.Errorf("nodes: %v, want this host and port", ids)
	}
	a.subscribe(t, "topic=m.t", "")
	a.subscribe(t, "topic=m.t&topic=m.u", "")
	id1 := a.publish(t, "m.t", "", "one")
	id2 := a.publish(t, "m.t", "", "two")
	waitFor(t, 10*time.Second, "subscriber counts", func() bool {
		var r topicReply
		a.getJSON(t, "/api/topics/m.t", &r)
		return r.Subscribers == 2
	})
	var r topicReply
	a.getJSON(t, "/api/topics/m.t", &r)
	if r.History == nil || r.History.Length != 2 || r.History.FirstID != id1 || r.History.LastID != id2 || !r.Complete {
		t.Errorf("topic: %+v (ids %s %s)", r, id1, id2)
	}
	var list struct {
		Topics []topicSummary `json:"topics"`
	}
	a.getJSON(t, "/api/topics?prefix=m.", &list)
	if len(list.Topics) != 2 || list.Topics[0] != (topicSummary{"m.t", 2, 1}) || list.Topics[1] != (topicSummary{"m.u", 1, 1}) {
		t.Errorf("busiest: %+v", list)
	}
}

// TestFleetDeadNodeExpires: a replica that stops writing (it died: no
// withdraw) vanishes once its record expires.
func TestFleetDeadNodeExpires(t *testing.T) {
	r := testredis.Start(t)
	a := fleetServer(t, "node-a", func(c *Config) { c.RedisURL = r.URL() })
	b := fleetServer(t, "node-b", func(c *Config) { c.RedisURL = r.URL() })
	waitFor(t, 10*time.Second, "two nodes", func() bool { return len(a.nodeIDs(t)) == 2 })
	// Kill b's announcing without its withdraw, as a crash would.
	b.nodes.mu.Lock()
	stop, done := b.nodes.stop, b.nodes.done
	b.nodes.stop, b.nodes.ended = nil, true
	b.nodes.mu.Unlock()
	close(stop)
	<-done
	waitFor(t, 10*time.Second, "node-b to expire", func() bool {
		return strings.Join(a.nodeIDs(t), ",") == "node-a"
	})
}

// TestFleetBrokerDown: with Redis gone, the view degrades to this replica
// and says so.
func TestFleetBrokerDown(t *testing.T) {
	r := testredis.Start(t)
	a := fleetServer(t, "node-a", func(c *Config) { c.RedisURL = r.URL(); c.PublishTimeout = time.Second })
	waitFor(t, 10*time.Second, "one node", func() bool { return len(a.nodeIDs(t)) == 1 })
	r.Stop(t)
	var n nodesReply
	a.getJSON(t, "/api/nodes", &n)
	if n.Complete || n.Error == "" || len(n.Nodes) != 1 || n.Nodes[0].ID != "node-a" {
		t.Errorf("broker down: %+v", n)
	}
	var tr topicReply
	a.getJSON(t, "/api/topics/x", &tr)
	if tr.Complete || tr.Error == "" || tr.History != nil {
		t.Errorf("topic with broker down: %+v", tr)
	}
	// Back: the view is whole again (and the client's dialer rests).
	r.Start(t)
	waitFor(t, 20*time.Second, "the view back", func() bool {
		var n nodesReply
		a.getJSON(t, "/api/nodes", &n)
		return n.Complete && len(n.Nodes) == 1
	})
}

// TestStatusStream: the status feed sends its history, then a snapshot
// per interval, and ends on drain.
func TestStatusStream(t *testing.T) {
	s := fleetServer(t, "node-s", nil)
	waitFor(t, 5*time.Second, "ready", func() bool { return len(s.nodeIDs(t)) == 1 })
	read := func() (*bufio.Reader, func()) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/api/status/stream", nil)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("status stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return bufio.NewReader(resp.Body), func() { cancel(); resp.Body.Close() }
	}
	event := func(br *bufio.Reader) (typ, data string) {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("status stream: %v", err)
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			case line == "" && typ != "":
				return typ, data
			}
		}
	}
	br, closeFirst := read()
	typ, data := event(br)
	var hist struct {
		IntervalMS int               `json:"interval_ms"`
		Samples    []json.RawMessage `json:"samples"`
	}
	if err := json.Unmarshal([]byte(data), &hist); typ != "history" || err != nil || hist.IntervalMS != 50 {
		t.Fatalf("first event %q %s (%v)", typ, data, err)
	}
	var snap struct {
		Time     time.Time    `json:"time"`
		Nodes    []nodeRecord `json:"nodes"`
		Complete bool         `json:"complete"`
	}
	var last time.Time
	for i := 0; i < 3; i++ {
		typ, data = event(br)
		if err := json.Unmarshal([]byte(data), &snap); typ != "nodes" || err != nil || len(snap.Nodes) != 1 || snap.Nodes[0].ID != "node-s" || !snap.Complete {
			t.Fatalf("snapshot %q %s (%v)", typ, data, err)
		}
		if !snap.Time.After(last) {
			t.Errorf("snapshot times not increasing: %v then %v", last, snap.Time)
		}
		last = snap.Time
	}
	closeFirst()
	// A second page gets the history the first one saw.
	br2, closeSecond := read()
	defer closeSecond()
	_, data = event(br2)
	if err := json.Unmarshal([]byte(data), &hist); err != nil || len(hist.Samples) < 3 {
		t.Errorf("second page's history: %d samples (%v)", len(hist.Samples), err)
	}
	// Drain ends the stream.
	s.stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := br2.ReadString('\n'); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("status stream not ended by the drain")
	}
}

func TestQuantile(t *testing.T) {
	bounds := []float64{1, 2, 4}
	for _, tc := range []struct {
		q      float64
		counts []uint64 // cumulative, +Inf last
		want   float64
		none   bool
	}{
		{0.5, []uint64{0, 0, 0, 0}, 0, true},
		{0.5, []uint64{10, 10, 10, 10}, 0.5, false},
		{0.5, []uint64{0, 10, 10, 10}, 1.5, false},
		{0.99, []uint64{0, 0, 100, 100}, 3.98, false},
		{0.99, []uint64{0, 0, 0, 5}, 4, false}, // +Inf bucket: the highest bound
		{0.5, []uint64{5, 5, 5, 10}, 1, false},
	} {
		got := quantile(tc.q, bounds, tc.counts)
		if tc.none != (got == nil) || got != nil && *got != tc.want {
			if got != nil {
				t.Errorf("quantile(%v, %v) = %v, want %v", tc.q, tc.counts, *got, tc.want)
			} else {
				t.Errorf("quantile(%v, %v) = nil, want %v", tc.q, tc.counts, tc.want)
			}
		}
	}
}

// TestReplayReasons: events replayed after a reset are counted under the
// reset's reason, those after an honoured Last-Event-ID under "resume".
func TestReplayReasons(t *testing.T) {
	ls := startServer(t, nil)
	a1 := ls.publish(t, "ra", "", "a1")
	ls.publish(t, "ra", "", "a2")
	ls.publish(t, "ra", "", "a3")
	b1 := ls.publish(t, "rb", "", "b1")
	// A cursor of topic rb on topic ra: an unknown-cursor reset, then the
	// three retained events of ra.
	st := ls.subscribe(t, "topic=ra", b1)
	for _, want := range []string{"herald.reset", "a1", "a2", "a3"} {
		if ev := st.next(t); ev.Data != want && ev.Type != want {
			t.Fatalf("got %+v, want %s", ev, want)
		}
	}
	// An honoured cursor: two events after a1.
	st2 := ls.subscribe(t, "topic=ra", a1)
	st2.next(t)
	st2.next(t)
	waitFor(t, 5*time.Second, "replay counters", func() bool {
		return counterValue(t, ls.Metrics(), "herald_replayed_events_total", "unknown-cursor") == 3 &&
			counterValue(t, ls.Metrics(), "herald_replayed_events_total", "resume") == 2
	})
	if got := counterValue(t, ls.Metrics(), "herald_replayed_events_total", "truncated"); got != 0 {
		t.Errorf("truncated replays = %v", got)
	}
}

// TestStatusPageServed: the page and its assets are served at /status,
// to anyone (the data behind them needs admin access).
func TestStatusPageServed(t *testing.T) {
	s := newMemServer(t, func(c *Config) { c.AdminKey = testAdminKey })
	for _, path := range []string{"/status", "/status/", "/status/status.js", "/status/status.css"} {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "192.0.2.1:1"
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.Len() == 0 || rec.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: %d, %d bytes, CSP %q", path, rec.Code, rec.Body.Len(), rec.Header().Get("Content-Security-Policy"))
		}
	}
}
