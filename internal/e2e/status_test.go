package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// statusAdminKey is the replicas' --admin-key in these tests (heraldEnv):
// the status page reads the cluster view with it.
const statusAdminKey = "e2e-status-page-admin-key-0123456789"

// pageNode is a replica as the status page's latest snapshot has it.
type pageNode struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// TestStatusPage: a headless Chromium opens /status through HAProxy with
// the admin key in the fragment; the page shows the three replicas; its
// deliveries and publishes charts move when events are published through
// the balancer to subscribers; the topic search finds the topics; the
// replica serving the page's stream is killed: the page reconnects through
// the balancer and the replica leaves it. HERALD_SCREENSHOT=docs/status.png
// writes a screenshot (after a minute of varying traffic, so the charts
// have something to show; HERALD_SCREENSHOT_AFTER=4m for longer).
func TestStatusPage(t *testing.T) {
	chromium := chromiumPath(t)
	c := startCluster(t, haproxy)
	shot := os.Getenv("HERALD_SCREENSHOT")

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	ctx, cancel := context.WithTimeout(bctx, 5*time.Minute)
	defer cancel()
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	wait := func(cond string, within time.Duration) {
		t.Helper()
		waitStatusJS(t, ctx, cond, within)
	}

	start := time.Now()
	check("open /status through the load balancer", chromedp.Do(ctx,
		chromedp.Navigate(c.LB+"/status#key="+url.QueryEscape(statusAdminKey)),
		chromedp.WaitVisible(chromedp.ID("nodes")),
	))
	wait(`heraldStatus.state === "open" && document.querySelectorAll("#nodes [data-node-id]").length === 3`, 60*time.Second)
	t.Logf("the status page shows 3 replicas %v after it was opened", time.Since(start).Round(time.Millisecond))
	if loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`)); err != nil || strings.Contains(loc, "key=") {
		t.Errorf("the admin key stays in the address bar: %q %v", loc, err)
	}
	// The replica serving the page's stream: before any subscriber, the only
	// one with a session open in HAProxy.
	var streaming *replica
	poll(t, 20*time.Second, "one replica serving the page's stream", func() bool {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		defer ccancel()
		streaming = nil
		sessions := c.sessions(cctx)
		total := 0
		for _, r := range c.Replicas {
			total += sessions[r.Name]
			if sessions[r.Name] == 1 {
				streaming = r
			}
		}
		return total == 1 && streaming != nil
	})
	t.Logf("the page's stream is on %s", streaming.Name)
	before, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`({deliveries: heraldStatus.charts.deliveries.max, publishes: heraldStatus.charts.publishes.max, snapshots: heraldStatus.snapshots})`))
	check("read the charts", err)

	// Subscribers through the balancer (leastconn spreads them), then a
	// publisher through it.
	topics := []string{"status.news", "status.chat", "status.scores"}
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	var subs []*subscriber
	for i := 0; i < 2*len(topics); i++ {
		subs = append(subs, subscribe(sctx, c.LB, []string{topics[i%len(topics)]}))
	}
	poll(t, 30*time.Second, "the subscribers connected", func() bool {
		for _, s := range subs {
			if s.opens.Load() == 0 {
				return false
			}
		}
		return true
	})
	var rate atomic.Int64 // publishes per second
	rate.Store(20)
	pctx, pcancel := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	var published, failed atomic.Int64
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for i := 0; pctx.Err() == nil; i++ {
			form := url.Values{"topic": {topics[i%len(topics)]}, "data": {fmt.Sprintf("status|%d", i)}}
			req, _ := http.NewRequestWithContext(pctx, http.MethodPost, c.LB+"/publish", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					published.Add(1)
				} else {
					failed.Add(1)
				}
			}
			select {
			case <-pctx.Done():
			case <-time.After(time.Second / time.Duration(max(1, rate.Load()))):
			}
		}
	}()
	stopPublishing := func() { pcancel(); pwg.Wait() }
	defer stopPublishing()

	wait(fmt.Sprintf(`heraldStatus.charts.deliveries.max > %g && heraldStatus.charts.publishes.max > %g &&
		Object.values(heraldStatus.charts.deliveries.last).some(v => v > 0) && Object.values(heraldStatus.charts.publishes.last).some(v => v > 0)`,
		before["deliveries"], before["publishes"]), 60*time.Second)
	after, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`({deliveries: heraldStatus.charts.deliveries.max, publishes: heraldStatus.charts.publishes.max, snapshots: heraldStatus.snapshots})`))
	check("read the charts", err)
	t.Logf("charts moved: deliveries/s max %g -> %g, publishes/s max %g -> %g (%d published, %d refused)",
		before["deliveries"], after["deliveries"], before["publishes"], after["publishes"], published.Load(), failed.Load())
	// The connections chart counts the subscribers.
	wait(fmt.Sprintf(`Object.values(heraldStatus.charts.connections.last).reduce((a, b) => a + b, 0) >= %d`, len(subs)), 30*time.Second)

	// The topic search finds the topics, and a topic's subscribers across
	// the cluster and its history.
	check("search topics", chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("topic-prefix"), "status."),
		chromedp.Click(chromedp.ID("topic-search")),
	))
	wait(`document.querySelectorAll("#topic-results li[data-topic^='status.']").length === 3`, 30*time.Second)
	check("open a topic", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#topic-results li[data-topic="status.news"] button`))))
	wait(`document.getElementById("topic-detail").getAttribute("data-topic") === "status.news" &&
		heraldStatus.topic.subscribers === 2 && heraldStatus.topic.history.length > 0 && heraldStatus.topic.history.last_id !== ""`, 30*time.Second)

	if shot != "" {
		// Traffic that varies (a minute, or HERALD_SCREENSHOT_AFTER), for
		// a screenshot worth looking at.
		traffic := time.Minute
		if v := os.Getenv("HERALD_SCREENSHOT_AFTER"); v != "" {
			if traffic, err = time.ParseDuration(v); err != nil {
				t.Fatalf("HERALD_SCREENSHOT_AFTER: %v", err)
			}
		}
		rates := []int64{5, 40, 15, 60, 25, 10, 30, 8}
		for i := 0; time.Duration(i)*10*time.Second < traffic; i++ {
			rate.Store(rates[i%len(rates)])
			time.Sleep(10 * time.Second)
		}
		check("open the topic again", chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#topic-results li[data-topic="status.news"] button`))))
		time.Sleep(time.Second)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		check("screenshot", err)
		if !filepath.IsAbs(shot) {
			shot = filepath.Join("..", "..", shot) // the path is from the repository's root
		}
		if err := os.WriteFile(shot, png, 0o644); err != nil {
			t.Fatalf("write the screenshot: %v", err)
		}
		t.Logf("screenshot written to %s", shot)
	}

	// Kill the replica serving the page's stream: the page reconnects
	// through the balancer, and the replica leaves it once its record
	// expires.
	victim := streaming
	reconnects, err := chromedp.Run(ctx, chromedp.Evaluate[int](`heraldStatus.reconnects`))
	check("read the reconnect count", err)
	id := nodeIDOf(t, ctx, victim)
	t.Logf("%s is %s on the page: SIGKILL", victim.Name, id)
	c.Kill(victim)
	killed := time.Now()
	wait(fmt.Sprintf(`document.querySelectorAll("#nodes [data-node-id]").length === 2 && !document.querySelector('#nodes [data-node-id=%q]') && heraldStatus.nodeIds.indexOf(%q) < 0`, id, id), 30*time.Second)
	t.Logf("%s left the page %v after it was killed", id, time.Since(killed).Round(time.Millisecond))
	// The page goes on (perhaps over another replica's stream).
	snaps, err := chromedp.Run(ctx, chromedp.Evaluate[int](`heraldStatus.snapshots`))
	check("read the snapshot count", err)
	wait(fmt.Sprintf(`heraldStatus.state === "open" && heraldStatus.snapshots > %d && heraldStatus.nodeIds.length === 2 && heraldStatus.reconnects > %d`, snaps+2, reconnects), 30*time.Second)

	stopPublishing()
	stopAll(t, scancel, subs)
	if published.Load() == 0 {
		t.Error("nothing was published")
	}
}

// sessions returns HAProxy's current sessions (scur) per herald server.
func (c *cluster) sessions(ctx context.Context) map[string]int {
	out := map[string]int{}
	code, body, err := httpGet(ctx, c.lbStats+";csv")
	if err != nil || code != 200 {
		return out
	}
	for _, line := range strings.Split(body, "\n") {
		f := strings.Split(line, ",")
		if len(f) > 4 && f[0] == "herald" && strings.HasPrefix(f[1], "herald") {
			n, _ := strconv.Atoi(f[4])
			out[f[1]] = n
		}
	}
	return out
}

// nodeIDOf finds the replica's id on the page: the node whose address is
// the container's address on the network, or whose id starts with its
// hostname.
func nodeIDOf(t *testing.T, ctx context.Context, r *replica) string {
	t.Helper()
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := r.ctr.Inspect(dctx)
	if err != nil {
		t.Fatalf("inspect %s: %v", r.Name, err)
	}
	ips, _ := r.ctr.ContainerIPs(dctx)
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(heraldStatus.snapshot.nodes.map(n => ({id: n.id, address: n.address})))`))
	if err != nil {
		t.Fatalf("browser: read the nodes: %v", err)
	}
	var nodes []pageNode
	if err := json.Unmarshal([]byte(raw), &nodes); err != nil {
		t.Fatalf("the page's nodes %s: %v", raw, err)
	}
	for _, n := range nodes {
		host, _, _ := net.SplitHostPort(n.Address)
		idHost, _, _ := net.SplitHostPort(n.ID)
		if idHost == info.Config.Hostname || idHost == r.Name {
			return n.ID
		}
		for _, ip := range ips {
			if host == ip {
				return n.ID
			}
		}
	}
	t.Fatalf("no node on the page is %s (hostname %s, addresses %v): %s", r.Name, info.Config.Hostname, ips, raw)
	return ""
}

// waitStatusJS polls a JavaScript condition in the status page until it
// is true, and shows the page's state when it is not.
func waitStatusJS(t *testing.T, ctx context.Context, cond string, within time.Duration) {
	t.Helper()
	waitJSState(t, ctx, cond, within, 200*time.Millisecond, `JSON.stringify({state: heraldStatus.state, snapshots: heraldStatus.snapshots,
		reconnects: heraldStatus.reconnects, nodes: heraldStatus.nodeIds, charts: heraldStatus.charts, topic: heraldStatus.topic, error: heraldStatus.lastError})`)
}
