package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// The contract of the cluster view (/api/*) as the page reads it; the
// fake below serves it.
type fakeBroker struct {
	Kind      string `json:"kind"`
	Up        bool   `json:"up"`
	LastEvent string `json:"last_event,omitempty"`
}

type fakeTopic struct {
	Topic       string `json:"topic"`
	Subscribers int    `json:"subscribers"`
}

type fakeNode struct {
	ID                  string      `json:"id"`
	Version             string      `json:"version"`
	Address             string      `json:"address"`
	Started             string      `json:"started"`
	Updated             string      `json:"updated"`
	Broker              fakeBroker  `json:"broker"`
	Connections         int         `json:"connections"`
	Topics              int         `json:"topics"`
	DeliveriesPerSecond float64     `json:"deliveries_per_second"`
	PublishesPerSecond  float64     `json:"publishes_per_second"`
	LatencyP50          *float64    `json:"latency_p50_seconds,omitempty"`
	LatencyP99          *float64    `json:"latency_p99_seconds,omitempty"`
	DeliveredTotal      int         `json:"delivered_total"`
	PublishedTotal      int         `json:"published_total"`
	TopTopics           []fakeTopic `json:"top_topics"`
	TopicsTruncated     bool        `json:"topics_truncated"`
}

type fakeSnapshot struct {
	Time     string     `json:"time"`
	Nodes    []fakeNode `json:"nodes"`
	Complete bool       `json:"complete"`
	Error    string     `json:"error,omitempty"`
}

const fakeKey = "test-key"

// fakeCluster serves the page (Handler) and a fake cluster view: three
// replicas whose numbers the test changes, a stream that sends a snapshot
// every tick and ends after endAfter snapshots (the page must reconnect).
type fakeCluster struct {
	tick     time.Duration
	endAfter int

	mu       sync.Mutex
	nodes    map[string]*fakeNode
	streams  int
	history  []fakeSnapshot
	started  time.Time
	badAuths int
	viewErr  string // the snapshots' error (and complete false) when set
}

func newFakeCluster() *fakeCluster {
	f := &fakeCluster{tick: 250 * time.Millisecond, endAfter: 12, nodes: map[string]*fakeNode{}, started: time.Now().Add(-90 * time.Minute)}
	for i, id := range []string{"3f2a9c1d7b00:8080", "8be41d2a90c1:8080", "c07d5e6f1a22:8080"} {
		p50, p99 := 0.0008, 0.0031
		f.nodes[id] = &fakeNode{
			ID: id, Version: "1.4.0", Address: fmt.Sprintf("172.18.0.%d:8080", 5+i),
			Started:     f.started.Add(time.Duration(i) * time.Minute).UTC().Format(time.RFC3339),
			Broker:      fakeBroker{Kind: "redis", Up: true},
			Connections: 10 + 5*i, Topics: 3 + i, DeliveriesPerSecond: 1.5, PublishesPerSecond: 0.5,
			LatencyP50: &p50, LatencyP99: &p99,
			TopTopics: []fakeTopic{{"news", 3}, {"net.status", 1}},
		}
	}
	// Two minutes of history, one sample a second.
	now := time.Now()
	for s := 120; s > 0; s-- {
		f.history = append(f.history, f.snapshotLocked(now.Add(-time.Duration(s)*time.Second)))
	}
	return f
}

func (f *fakeCluster) snapshotLocked(at time.Time) fakeSnapshot {
	snap := fakeSnapshot{Time: at.UTC().Format(time.RFC3339Nano), Complete: f.viewErr == "", Error: f.viewErr}
	for _, n := range f.nodes {
		c := *n
		c.Updated = at.Add(-100 * time.Millisecond).UTC().Format(time.RFC3339Nano)
		c.Broker.LastEvent = at.Add(-2 * time.Second).UTC().Format(time.RFC3339Nano)
		snap.Nodes = append(snap.Nodes, c)
	}
	sort.Slice(snap.Nodes, func(i, j int) bool { return snap.Nodes[i].ID < snap.Nodes[j].ID })
	return snap
}

func (f *fakeCluster) update(fn func(nodes map[string]*fakeNode)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.nodes)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeCluster) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") == "Bearer "+fakeKey {
		return true
	}
	f.mu.Lock()
	f.badAuths++
	f.mu.Unlock()
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin credentials required"})
	return false
}

func (f *fakeCluster) handler() http.Handler {
	mux := http.NewServeMux()
	page := Handler()
	mux.Handle("GET /status", page)
	mux.Handle("GET /status/", page)
	mux.HandleFunc("GET /api/nodes", func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(w, r) {
			return
		}
		f.mu.Lock()
		snap := f.snapshotLocked(time.Now())
		f.mu.Unlock()
		writeJSON(w, 200, map[string]any{"nodes": snap.Nodes})
	})
	type topicRow struct {
		Topic       string `json:"topic"`
		Subscribers int    `json:"subscribers"`
		Nodes       int    `json:"nodes"`
	}
	topics := []topicRow{{"news", 5, 2}, {"net.status", 2, 1}, {"chat.7", 1, 1}}
	mux.HandleFunc("GET /api/topics", func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(w, r) {
			return
		}
		out := []topicRow{}
		for _, t := range topics {
			if strings.HasPrefix(t.Topic, r.URL.Query().Get("prefix")) {
				out = append(out, t)
			}
		}
		writeJSON(w, 200, map[string]any{"topics": out, "complete": true})
	})
	mux.HandleFunc("GET /api/topics/{topic}", func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(w, r) {
			return
		}
		topic := r.PathValue("topic")
		if strings.ContainsAny(topic, " \n") {
			writeJSON(w, 400, map[string]string{"error": "invalid topic"})
			return
		}
		writeJSON(w, 200, map[string]any{
			"topic": topic, "subscribers": 5,
			"nodes":    []map[string]any{{"id": "3f2a9c1d7b00:8080", "subscribers": 3}, {"id": "8be41d2a90c1:8080", "subscribers": 2}},
			"history":  map[string]any{"length": 10, "first_id": "8ffaa05a-3c6bdcdd-1", "last_id": "8ffaa05a-3c6bdcdd-10", "epoch": "8ffaa05a"},
			"complete": true,
		})
	})
	mux.HandleFunc("GET /api/status/stream", func(w http.ResponseWriter, r *http.Request) {
		if !f.authorized(w, r) {
			return
		}
		f.mu.Lock()
		f.streams++
		hist := append([]fakeSnapshot(nil), f.history...)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		send := func(event string, v any) bool {
			b, _ := json.Marshal(v)
			// CRLF line ends on purpose: the page's parser must take them.
			if _, err := fmt.Fprintf(w, "event: %s\r\ndata: %s\r\n\r\n", event, b); err != nil {
				return false
			}
			return rc.Flush() == nil
		}
		if !send("history", map[string]any{"interval_ms": 1000, "samples": hist}) {
			return
		}
		fmt.Fprint(w, ": a comment line\n\n")
		t := time.NewTicker(f.tick)
		defer t.Stop()
		for i := 0; i < f.endAfter; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			f.mu.Lock()
			snap := f.snapshotLocked(time.Now())
			f.history = append(f.history, snap)
			f.mu.Unlock()
			if !send("nodes", snap) {
				return
			}
		}
	})
	return mux
}

// chromiumPath finds a Chromium as internal/e2e does: $HERALD_CHROMIUM,
// else Debian's chromium package, else Chrome. Without one the test skips,
// or fails under CI=true.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HERALD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (apt-get install chromium, or set HERALD_CHROMIUM; scripts/e2e-prepare.sh prepares it)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// browser starts a headless Chromium and returns a tab's context; page
// errors (exceptions, CSP violations, console errors) are collected.
type browser struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T, within time.Duration) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(bcancel)
	ctx, cancel := context.WithTimeout(bctx, within)
	t.Cleanup(cancel)
	b := &browser{t: t, ctx: ctx}
	b.listen(ctx)
	return b
}

// tab opens another tab (its own sessionStorage) in the same browser.
func (b *browser) tab() context.Context {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	b.listen(ctx)
	return ctx
}

func (b *browser) listen(ctx context.Context) {
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// A 401 answer is logged as a network error; that one is expected.
			if m.IsException() || m.Type == chromedp.ConsoleError && m.Source != "network" {
				b.mu.Lock()
				b.errors = append(b.errors, m.String())
				b.mu.Unlock()
			}
		}
	}()
}

func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("browser: evaluate %s: %v", js, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true.
func waitJS(t *testing.T, ctx context.Context, cond string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !eval[bool](t, ctx, cond) {
		if time.Now().After(deadline) {
			state := eval[string](t, ctx, `JSON.stringify({state: heraldStatus.state, snapshots: heraldStatus.snapshots, reconnects: heraldStatus.reconnects, nodes: heraldStatus.nodeIds, charts: heraldStatus.charts, error: heraldStatus.lastError})`)
			t.Fatalf("browser: %s still false after %v (page: %s)", cond, within, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPage runs the page's JavaScript in headless Chromium against the
// fake cluster view: the key form after a 401, cards and charts from the
// stream (CRLF lines, comments), charts that follow the numbers, a replica
// that leaves, a reconnect when the stream ends, the topic search, and the
// key from the URL fragment.
func TestPage(t *testing.T) {
	f := newFakeCluster()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	b := newBrowser(t, 2*time.Minute)
	ctx := b.ctx

	// Without a key: a 401, and the form asks for one.
	run(t, ctx, "open /status", chromedp.Navigate(srv.URL+"/status"), chromedp.WaitVisible(chromedp.CSS(`#key-form`)))
	waitJS(t, ctx, `heraldStatus.state === "unauthorized"`, 10*time.Second)
	run(t, ctx, "enter the key",
		chromedp.SendKeys(chromedp.CSS(`#admin-key`), fakeKey),
		chromedp.Click(chromedp.CSS(`#key-submit`)),
	)
	waitJS(t, ctx, `heraldStatus.state === "open" && heraldStatus.snapshots >= 2`, 15*time.Second)
	if !eval[bool](t, ctx, `document.getElementById("key-form").hidden`) {
		t.Error("the key form is still shown after the stream opened")
	}
	if got := eval[string](t, ctx, `sessionStorage.getItem("herald.status.key")`); got != fakeKey {
		t.Errorf("sessionStorage holds %q, want the key", got)
	}

	// Three cards, sorted, with the numbers of the snapshot.
	ids := eval[[]string](t, ctx, `Array.from(document.querySelectorAll("#nodes [data-node-id]")).map(e => e.getAttribute("data-node-id"))`)
	if strings.Join(ids, " ") != "3f2a9c1d7b00:8080 8be41d2a90c1:8080 c07d5e6f1a22:8080" {
		t.Fatalf("cards %v, want the three replicas in id order", ids)
	}
	card := eval[map[string]string](t, ctx, `(() => { const c = document.querySelector('[data-node-id="8be41d2a90c1:8080"]'); const o = {text: c.textContent};
		c.querySelectorAll("[data-field]").forEach(e => o[e.getAttribute("data-field")] = e.textContent); return o; })()`)
	for field, want := range map[string]string{"connections": "15", "topics": "4", "deliveries": "1.5", "publishes": "0.5", "latency": "0.8 ms / 3.1 ms", "broker": "redis up", "uptime": "1h 29m"} {
		if card[field] != want {
			t.Errorf("card field %s is %q, want %q", field, card[field], want)
		}
	}
	for _, want := range []string{"172.18.0.6:8080", "v1.4.0", "last event 2s ago", "news 3"} {
		if !strings.Contains(card["text"], want) {
			t.Errorf("card %q lacks %q", card["text"], want)
		}
	}

	// The charts hold the history (two minutes) and grow every tick.
	waitJS(t, ctx, `heraldStatus.charts.deliveries && heraldStatus.charts.deliveries.points >= 3 * 120`, 10*time.Second)
	for _, name := range []string{"connections", "deliveries", "publishes", "latency", "broker"} {
		if n := eval[int](t, ctx, fmt.Sprintf(`heraldStatus.charts[%q].points`, name)); n < 3*120 {
			t.Errorf("chart %s has %d points, want the history's %d at least", name, n, 3*120)
		}
		if n := eval[int](t, ctx, fmt.Sprintf(`document.querySelectorAll('#chart-%s path.series, #chart-%s rect.up').length`, name, name)); n == 0 {
			t.Errorf("chart %s draws nothing", name)
		}
	}
	before := eval[int](t, ctx, `heraldStatus.charts.connections.points`)
	waitJS(t, ctx, fmt.Sprintf(`heraldStatus.charts.connections.points > %d`, before), 10*time.Second)

	// More deliveries on one replica, its broker down on another: the
	// charts follow.
	path := eval[string](t, ctx, `document.querySelector('#chart-deliveries path[data-series="3f2a9c1d7b00:8080"]').getAttribute("d")`)
	f.update(func(nodes map[string]*fakeNode) {
		nodes["3f2a9c1d7b00:8080"].DeliveriesPerSecond = 40
		nodes["c07d5e6f1a22:8080"].Broker.Up = false
		nodes["c07d5e6f1a22:8080"].LatencyP50, nodes["c07d5e6f1a22:8080"].LatencyP99 = nil, nil
	})
	waitJS(t, ctx, `heraldStatus.charts.deliveries.last["3f2a9c1d7b00:8080"] === 40 && heraldStatus.charts.deliveries.max === 40`, 10*time.Second)
	if after := eval[string](t, ctx, `document.querySelector('#chart-deliveries path[data-series="3f2a9c1d7b00:8080"]').getAttribute("d")`); after == path {
		t.Error("the deliveries line did not change")
	}
	waitJS(t, ctx, `heraldStatus.charts.broker.last["c07d5e6f1a22:8080"] === 0 && document.querySelectorAll("#chart-broker rect.down").length > 0`, 10*time.Second)
	waitJS(t, ctx, `document.querySelector('[data-node-id="c07d5e6f1a22:8080"] [data-field="broker"]').textContent === "redis down"`, 5*time.Second)
	if got := eval[string](t, ctx, `document.querySelector('[data-node-id="c07d5e6f1a22:8080"] [data-field="latency"]').textContent`); got != "— / —" {
		t.Errorf("latency of a replica that delivered nothing shows %q", got)
	}

	// A replica that stops reporting leaves the cards; its line stays in
	// the past.
	f.update(func(nodes map[string]*fakeNode) { delete(nodes, "8be41d2a90c1:8080") })
	waitJS(t, ctx, `document.querySelectorAll("#nodes [data-node-id]").length === 2 && !document.querySelector('#nodes [data-node-id="8be41d2a90c1:8080"]')`, 10*time.Second)
	if got := eval[string](t, ctx, `document.querySelector('[data-legend-id="8be41d2a90c1:8080"]').textContent`); !strings.Contains(got, "gone") {
		t.Errorf("legend of the replica that left: %q", got)
	}
	if n := eval[int](t, ctx, `heraldStatus.nodeIds.length`); n != 2 {
		t.Errorf("heraldStatus.nodeIds has %d ids, want 2", n)
	}

	// An incomplete view is said so.
	f.update(func(map[string]*fakeNode) { f.viewErr = "redis: i/o timeout" })
	waitJS(t, ctx, `!document.getElementById("view-note").hidden && document.getElementById("view-note").textContent.includes("i/o timeout")`, 10*time.Second)
	f.update(func(map[string]*fakeNode) { f.viewErr = "" })
	waitJS(t, ctx, `document.getElementById("view-note").hidden`, 10*time.Second)

	// The stream ends after endAfter snapshots: the page reconnects and
	// goes on.
	waitJS(t, ctx, `heraldStatus.reconnects >= 1 && heraldStatus.state === "open"`, 20*time.Second)
	snaps := eval[int](t, ctx, `heraldStatus.snapshots`)
	waitJS(t, ctx, fmt.Sprintf(`heraldStatus.snapshots > %d`, snaps), 10*time.Second)

	// Topic search: a prefix, then a click on a result.
	run(t, ctx, "search topics", chromedp.SendKeys(chromedp.CSS(`#topic-prefix`), "ne"), chromedp.Click(chromedp.CSS(`#topic-search`)))
	waitJS(t, ctx, `document.querySelectorAll("#topic-results li[data-topic]").length === 2`, 10*time.Second)
	run(t, ctx, "open a topic", chromedp.Click(chromedp.CSS(`#topic-results li[data-topic="news"] button`)))
	waitJS(t, ctx, `document.getElementById("topic-detail").getAttribute("data-topic") === "news"`, 10*time.Second)
	detail := eval[map[string]string](t, ctx, `({length: document.getElementById("topic-detail-length").textContent,
		first: document.getElementById("topic-detail-first").textContent, last: document.getElementById("topic-detail-last").textContent,
		epoch: document.getElementById("topic-detail-epoch").textContent, subscribers: document.getElementById("topic-detail-subscribers").textContent,
		rows: Array.from(document.querySelectorAll("#topic-detail-nodes tr")).map(tr => tr.textContent).join("|")})`)
	for k, want := range map[string]string{"length": "10", "first": "8ffaa05a-3c6bdcdd-1", "last": "8ffaa05a-3c6bdcdd-10", "epoch": "8ffaa05a", "subscribers": "5", "rows": "3f2a9c1d7b00:80803|8be41d2a90c1:80802"} {
		if detail[k] != want {
			t.Errorf("topic detail %s is %q, want %q", k, detail[k], want)
		}
	}
	if shot := os.Getenv("HERALD_SCREENSHOT_FAKE"); shot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("browser: screenshot: %v", err)
		}
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Dark: the colors follow prefers-color-scheme.
	light := eval[string](t, ctx, `getComputedStyle(document.body).backgroundColor`)
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatalf("browser: emulate a dark color scheme: %v", err)
	}
	if dark := eval[string](t, ctx, `getComputedStyle(document.body).backgroundColor`); dark == light {
		t.Errorf("the background is %s in the dark color scheme too", dark)
	}
	if shot := os.Getenv("HERALD_SCREENSHOT_FAKE"); shot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("browser: screenshot: %v", err)
		}
		if err := os.WriteFile(strings.TrimSuffix(shot, ".png")+"-dark.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Another tab (its own sessionStorage): the key from the fragment, which
	// leaves the address bar.
	tab := b.tab()
	run(t, tab, "open /status#key=", chromedp.Navigate(srv.URL+"/status#key="+fakeKey))
	waitJS(t, tab, `heraldStatus.state === "open" && heraldStatus.snapshots >= 1`, 15*time.Second)
	if loc := eval[string](t, tab, `location.href`); strings.Contains(loc, "key") {
		t.Errorf("the key stays in the address bar: %s", loc)
	}
	if eval[bool](t, tab, `!document.getElementById("key-form").hidden`) {
		t.Error("the key form is shown with a key from the fragment")
	}
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors: %q", errs)
	}
}
