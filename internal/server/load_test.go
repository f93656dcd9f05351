package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse"
)

// rawClient is a stream read over a plain TCP connection: no http.Client,
// so thousands of them cost one goroutine each (the reader the test
// starts), and the test controls the socket (closing it, not reading it).
type rawClient struct {
	conn net.Conn
	dec  *sse.Decoder
}

// dialStream opens GET /events?query with an optional Last-Event-ID and
// reads the response head.
func dialStream(ctx context.Context, addr, query, lastID string) (*rawClient, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	req := "GET /events?" + query + " HTTP/1.1\r\nHost: herald\r\nAccept: text/event-stream\r\n"
	if lastID != "" {
		req += "Last-Event-ID: " + lastID + "\r\n"
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != 200 {
		conn.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	dec := sse.NewDecoder(resp.Body)
	dec.MaxEventSize = 1 << 20
	return &rawClient{conn: conn, dec: dec}, nil
}

// dialMany opens n streams, at most par at a time (0: all at once).
func dialMany(t *testing.T, addr string, n, par int, query func(i int) (string, string)) []*rawClient {
	t.Helper()
	clients := make([]*rawClient, n)
	errs := make([]error, n)
	var sem chan struct{}
	if par > 0 {
		sem = make(chan struct{}, par)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if sem != nil {
				sem <- struct{}{}
				defer func() { <-sem }()
			}
			q, last := query(i)
			clients[i], errs[i] = dialStream(t.Context(), addr, q, last)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			for _, c := range clients {
				if c != nil {
					c.conn.Close()
				}
			}
			t.Fatalf("client %d: %v", i, err)
		}
	}
	return clients
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit and skips
// the test if that still cannot hold need descriptors.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Logf("setrlimit: %v", err)
		}
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < need {
		if os.Getenv("CI") == "true" {
			t.Fatalf("RLIMIT_NOFILE is %d, the test needs %d (raise the hard limit on the CI machine)", lim.Cur, need)
		}
		t.Skipf("RLIMIT_NOFILE is %d, the test needs %d", lim.Cur, need)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// TestSlowConsumer: one client stops reading (its TCP window fills) while
// slowReaders others read a steady stream. The slow client is disconnected,
// every other client receives every event, the heap stays bounded, and
// the others' latency with the slow client is logged as a ratio of a run
// without it (no timed assertion).
func TestSlowConsumer(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("load test: skipped with -short (never under CI=true)")
	}
	raiseFileLimit(t, uint64(2*slowReaders+200))
	ls := startServer(t, func(c *Config) {
		c.QueueLimit = 64
		c.WriteTimeout = 2 * time.Second
		c.HistorySize = 100
		c.MaxEventBytes = 128 << 10
	})
	addr := strings.TrimPrefix(ls.URL, "http://")
	const perPhase = 100
	clients := dialMany(t, addr, slowReaders, 100, func(int) (string, string) { return "topic=steady", "" })

	// Each reader records the latency of every event, per phase.
	type record struct {
		lat   [2][]time.Duration
		count [2]atomic.Int64
	}
	recs := make([]record, len(clients))
	var readers sync.WaitGroup
	for i, c := range clients {
		readers.Go(func() {
			for {
				ev, err := c.dec.Next()
				if err != nil {
					return
				}
				phase, nanos, _ := strings.Cut(ev.Data, "|")
				p, _ := strconv.Atoi(phase)
				ns, _ := strconv.ParseInt(nanos, 10, 64)
				recs[i].lat[p] = append(recs[i].lat[p], time.Since(time.Unix(0, ns)))
				recs[i].count[p].Add(1)
			}
		})
	}
	defer func() {
		for _, c := range clients {
			c.conn.Close()
		}
		readers.Wait()
	}()
	waitFor(t, 30*time.Second, "readers connected", func() bool { return ls.events.Connections() == len(clients) })

	publishPhase := func(phase int) {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range perPhase {
			<-tick.C
			data := strconv.Itoa(phase) + "|" + strconv.FormatInt(time.Now().UnixNano(), 10)
			if _, err := ls.broker.Publish(t.Context(), "steady", broker.Message{Data: data}); err != nil {
				t.Error(err)
				return
			}
		}
	}
	allGot := func(phase int) func() bool {
		return func() bool {
			for i := range recs {
				if recs[i].count[phase].Load() < perPhase {
					return false
				}
			}
			return true
		}
	}

	// Phase 0: no slow client.
	publishPhase(0)
	waitFor(t, 30*time.Second, "phase 0 delivered", allGot(0))
	heapBefore := heapInUse()

	// Phase 1: a client follows steady and bulk, and never reads.
	slowDialer := net.Dialer{Timeout: 10 * time.Second}
	slow, err := slowDialer.DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := fmt.Fprintf(slow, "GET /events?topic=steady&topic=bulk HTTP/1.1\r\nHost: herald\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "slow client connected", func() bool { return ls.events.Connections() == len(clients)+1 })
	slowClosed := func() bool { return testutilCounter(t, ls, `herald_streams_closed_total{reason="slow"}`) >= 1 }
	bulkDone := make(chan struct{})
	var bulkSent atomic.Int64
	go func() {
		defer close(bulkDone)
		big := strings.Repeat("b", 64<<10)
		for i := 0; ; i++ {
			if ls.events.Connections() <= len(clients) || i > 5000 {
				return
			}
			if _, err := ls.broker.Publish(context.Background(), "bulk", broker.Message{Data: big}); err != nil {
				return
			}
			bulkSent.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	publishPhase(1)
	waitFor(t, 30*time.Second, "phase 1 delivered", allGot(1))
	waitFor(t, 40*time.Second, "slow client disconnected", slowClosed)
	<-bulkDone
	heapAfter := heapInUse()
	if n := ls.events.Connections(); n != len(clients) {
		t.Errorf("%d streams open, want %d (the readers)", n, len(clients))
	}

	for i := range recs {
		for p := range 2 {
			if got := recs[i].count[p].Load(); got != perPhase {
				t.Fatalf("reader %d phase %d: %d events, want %d", i, p, got, perPhase)
			}
		}
	}
	var lat [2][]time.Duration
	for i := range recs {
		for p := range 2 {
			lat[p] = append(lat[p], recs[i].lat[p]...)
		}
	}
	for p := range 2 {
		slices.Sort(lat[p])
	}
	p50 := [2]time.Duration{percentile(lat[0], .5), percentile(lat[1], .5)}
	p99 := [2]time.Duration{percentile(lat[0], .99), percentile(lat[1], .99)}
	t.Logf("%d readers x %d events per phase (race=%v); slow client cut after %d bulk events of 64KiB",
		len(clients), perPhase, raceEnabled, bulkSent.Load())
	t.Logf("latency without slow client: p50 %v p99 %v; with: p50 %v p99 %v; ratio p50 %.2f p99 %.2f",
		p50[0], p99[0], p50[1], p99[1], ratio(p50), ratio(p99))
	growth := int64(heapAfter) - int64(heapBefore)
	t.Logf("heap before %d KiB, after %d KiB (growth %d KiB)", heapBefore>>10, heapAfter>>10, growth>>10)
	// Generous: the bulk topic's history (100 x 64KiB) plus slack.
	if growth > 64<<20 {
		t.Errorf("heap grew by %d MiB with one slow client", growth>>20)
	}
}

func ratio(d [2]time.Duration) float64 {
	if d[0] <= 0 {
		return 0
	}
	return float64(d[1]) / float64(d[0])
}

// TestReconnectStorm: stormClients clients drop at once and reconnect at
// once with their cursors while events were published in between. The
// replica stays up and every client resumes complete: exactly the events
// it missed, in order, then the live ones, with no reset.
func TestReconnectStorm(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("load test: skipped with -short (never under CI=true)")
	}
	n := stormClients
	raiseFileLimit(t, uint64(2*n+200))
	ls := startServer(t, func(c *Config) { c.HistorySize = 1000 })
	addr := strings.TrimPrefix(ls.URL, "http://")
	publish := func(k int, tag string) []string {
		ids := make([]string, k)
		for i := range ids {
			id, err := ls.broker.Publish(t.Context(), "storm", broker.Message{Type: "e", Data: tag + strconv.Itoa(i)})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		return ids
	}
	// read reads k events from every client (all at once) and checks
	// their ids and data.
	read := func(clients []*rawClient, ids []string, tag string) {
		t.Helper()
		errs := make([]error, len(clients))
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Go(func() {
				_ = c.conn.SetReadDeadline(time.Now().Add(40 * time.Second))
				for j, id := range ids {
					ev, err := c.dec.Next()
					if err != nil {
						errs[i] = fmt.Errorf("event %d: %w", j, err)
						return
					}
					if ev.ID != id || ev.Type != "e" || ev.Data != tag+strconv.Itoa(j) {
						errs[i] = fmt.Errorf("event %d: got %q %q %q, want id %q data %q", j, ev.ID, ev.Type, ev.Data, id, tag+strconv.Itoa(j))
						return
					}
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
		}
	}
	closeAll := func(clients []*rawClient) {
		for _, c := range clients {
			if c != nil {
				c.conn.Close()
			}
		}
	}

	start := time.Now()
	clients := dialMany(t, addr, n, 200, func(int) (string, string) { return "topic=storm", "" })
	waitFor(t, 30*time.Second, "all connected", func() bool { return ls.events.Connections() == n })
	t.Logf("%d clients connected in %v (race=%v)", n, time.Since(start).Round(time.Millisecond), raceEnabled)
	read(clients, publish(10, "a"), "a")
	last := make([]string, n)
	for i, c := range clients {
		last[i] = c.dec.LastEventID()
	}

	// Everyone drops at once.
	closeAll(clients)
	waitFor(t, 30*time.Second, "server noticed the drop", func() bool { return ls.events.Connections() == 0 })
	missed := publish(20, "b")

	// Everyone reconnects at once with its cursor.
	start = time.Now()
	clients = dialMany(t, addr, n, 0, func(i int) (string, string) { return "topic=storm", last[i] })
	defer closeAll(clients)
	reconnect := time.Since(start)
	read(clients, missed, "b")
	resumed := time.Since(start)
	read(clients, publish(5, "c"), "c")
	t.Logf("%d clients reconnected at once in %v, all resumed (20 missed events each) in %v",
		n, reconnect.Round(time.Millisecond), resumed.Round(time.Millisecond))

	if status, _, _ := ls.do(t, "GET", "/healthz", nil, ""); status != 200 {
		t.Fatalf("healthz %d", status)
	}
	if got := ls.events.Connections(); got != n {
		t.Fatalf("%d streams, want %d", got, n)
	}
	if r := testutilCounter(t, ls, `herald_resets_total{reason="truncated"}`); r != 0 {
		t.Fatalf("%v resets", r)
	}
}
