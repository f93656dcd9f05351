package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds a Chromium: $HERALD_CHROMIUM, else Debian's chromium
// package (scripts/e2e-prepare.sh installs it), else Chrome.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HERALD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	unavailable(t, "no Chromium found (apt-get install chromium, or set HERALD_CHROMIUM; %s prepares it)", prepareScript)
	return ""
}

// prepareScript installs what the end-to-end tests need beyond Go.
const prepareScript = "scripts/e2e-prepare.sh"

// domEvent is one event as the demo page shows it.
type domEvent struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	Data string `json:"data"`
}

// TestBrowser: a real browser opens the demo page through HAProxy,
// subscribes with the page's own EventSource and receives events; the
// replica serving its stream is killed; the browser reconnects through the
// load balancer by itself, and the page's list ends with every event of
// the topic, in order, with the IDs Redis assigned.
func TestBrowser(t *testing.T) {
	const perPhase = 25
	chromium := chromiumPath(t)
	c := startCluster(t, haproxy)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	// Every browser step below runs under this deadline.
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	defer cancel()

	const topic = "browser"
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("browser: %s: %v", what, err)
		}
	}
	start := time.Now()
	check("open the demo page through the load balancer", chromedp.Do(ctx,
		chromedp.Navigate(c.LB+"/"),
		chromedp.WaitVisible(chromedp.ID("subscribe-form")),
	))
	t.Logf("demo page loaded in %v", time.Since(start).Round(time.Millisecond))
	// Subscribe the way a person does: type the topic, click Connect.
	check("subscribe with the form", chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("topics"), topic),
		chromedp.Click(chromedp.ID("connect")),
	))
	waitJS(t, ctx, `window.herald.state === "open"`, 30*time.Second)

	// publish publishes events [from, to) from the page (fetch POST
	// /publish through the load balancer), retrying failed attempts, each
	// with its own payload.
	publish := func(from, to int) {
		t.Helper()
		js := fmt.Sprintf(`(async () => {
			for (let i = %d; i < %d; i++) {
				let done = false;
				for (let a = 0; a < 100 && !done; a++) {
					const r = await window.herald.publish(%q, "", %q + "|p0|" + i + "|a" + a);
					if (r.id) { done = true; } else { await new Promise(res => setTimeout(res, 100)); }
				}
				if (!done) { return "event " + i + " not published"; }
			}
			return "";
		})()`, from, to, topic, topic)
		msg, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		check(fmt.Sprintf("publish events %d-%d from the page", from, to-1), err)
		if msg != "" {
			t.Fatalf("browser: %s", msg)
		}
	}
	publish(0, perPhase)
	waitJS(t, ctx, fmt.Sprintf(`document.querySelectorAll("#events li[data-id]").length >= %d`, perPhase), 30*time.Second)

	// The replica serving the page's stream is the only one with a stream.
	var serving *replica
	poll(t, 10*time.Second, "exactly one replica serving the page's stream", func() bool {
		serving = nil
		total := 0
		for _, r := range c.Replicas {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			n := r.Connections(cctx)
			ccancel()
			total += n
			if n == 1 {
				serving = r
			}
		}
		return total == 1 && serving != nil
	})
	t.Logf("the page's stream is on %s: SIGKILL", serving.Name)
	c.Kill(serving)

	publish(perPhase, 2*perPhase)
	waitJS(t, ctx, fmt.Sprintf(`document.querySelectorAll("#events li[data-id]").length >= %d`, 2*perPhase), 60*time.Second)

	// The stream moved to a surviving replica, through the load balancer.
	poll(t, 10*time.Second, "the page's stream on a surviving replica", func() bool {
		total := 0
		for _, r := range c.Replicas {
			if r == serving {
				continue
			}
			cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
			total += r.Connections(cctx)
			ccancel()
		}
		return total == 1
	})

	dom, err := chromedp.Run(ctx, chromedp.Evaluate[[]domEvent](`Array.from(document.querySelectorAll("#events li[data-id]")).map(li => ({
		id: li.getAttribute("data-id"), type: li.getAttribute("data-type"), data: li.querySelector(".data").textContent}))`))
	check("read the page's list", err)
	reconnects, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.herald.reconnects`))
	check("read the page's reconnect count", err)
	want := c.streamLog(t, topic)
	if len(want) < 2*perPhase {
		t.Fatalf("the stream holds %d events, fewer than the %d published", len(want), 2*perPhase)
	}
	if reconnects < 1 {
		t.Errorf("the page counted %d reconnects, want at least 1 (its replica was killed)", reconnects)
	}
	if len(dom) != len(want) {
		t.Errorf("the page lists %d events, the stream holds %d", len(dom), len(want))
	}
	for i := 0; i < min(len(dom), len(want)); i++ {
		if dom[i].Type != "message" || dom[i].ID != want[i].ID || dom[i].Data != want[i].Data {
			t.Fatalf("page event %d is %+v, the stream has %+v there", i, dom[i], want[i])
		}
	}
	t.Logf("the page shows all %d events in order after %d reconnect(s), in %v", len(dom), reconnects, time.Since(start).Round(time.Millisecond))
}

// waitJS polls a JavaScript condition in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, cond string, within time.Duration) {
	t.Helper()
	waitJSState(t, ctx, cond, within, 100*time.Millisecond,
		`window.herald.state + ", " + window.herald.received.length + " received, " + window.herald.reconnects + " reconnects"`)
}

// waitJSState polls a JavaScript condition in the page every poll until it
// is true; when it is not within the time, it fails showing what the
// JavaScript expression state says of the page.
func waitJSState(t *testing.T, ctx context.Context, cond string, within, poll time.Duration, state string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
		if err != nil {
			t.Fatalf("browser: evaluate %s: %v", cond, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](state))
			t.Fatalf("browser: %s still false after %v (page: %s)", cond, within, page)
		}
		time.Sleep(poll)
	}
}
