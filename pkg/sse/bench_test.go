package sse

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

func BenchmarkAppendEventReused(b *testing.B) {
	e := Event{ID: "3f9a1c2e-1732700000000-17", Type: "price", Data: `{"sym":"ABC","px":101.25}`}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendEvent(buf[:0], &e)
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSharedFrame: what each connection pays for an event already
// encoded once for the replica.
func BenchmarkSharedFrame(b *testing.B) {
	ev := &broker.Event{Topic: "t", ID: "3f9a1c2e-17", Data: strings.Repeat("x", 100)}
	ev.Memo(encodeBrokerEvent)
	b.ReportAllocs()
	for b.Loop() {
		if len(ev.Memo(encodeBrokerEvent)) == 0 {
			b.Fatal("empty")
		}
	}
}

// discardWriter is a ResponseWriter that drops bytes but supports Flush.
type discardWriter struct {
	h http.Header
	n int64
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// SetWriteDeadline makes the writer look like net/http's, which supports
// deadlines (an unsupported one costs an error allocation per call).
func (d *discardWriter) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkDeliver measures the per-connection write path for one event:
// it must not allocate.
func BenchmarkDeliver(b *testing.B) {
	for _, topics := range [][]string{{"a"}, {"a", "b", "c"}} {
		b.Run(fmt.Sprintf("topics=%d", len(topics)), func(b *testing.B) {
			w := &discardWriter{h: http.Header{}}
			c := &topicStream{
				h: &TopicHandler{}, out: &responseSink{w: w, rc: http.NewResponseController(w)},
				topics: topics, tags: cursorTags(topics), pos: make([]string, len(topics)), timeout: time.Second,
			}
			evs := make([]*broker.Event, 64)
			for i := range evs {
				evs[i] = &broker.Event{Topic: topics[i%len(topics)], ID: fmt.Sprintf("3f9a1c2e-%d", i+1), Data: strings.Repeat("x", 100), Time: time.Now()}
				evs[i].Memo(encodeBrokerEvent)
			}
			// Warm the per-connection state and the batch pool.
			for _, ev := range evs {
				bt := getBatch()
				bt.items = append(bt.items, ev)
				c.prepare(bt)
				_ = c.out.flush(bt.bufs, c.timeout)
				putBatch(bt)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				bt := getBatch()
				bt.items = append(bt.items, evs[i%len(evs)])
				i++
				c.prepare(bt)
				if err := c.out.flush(bt.bufs, c.timeout); err != nil {
					b.Fatal(err)
				}
				putBatch(bt)
			}
		})
	}
}

// BenchmarkDeliverPublisherWrite measures the write path a flusher takes
// for an idle stream on a hijacked connection: take the queued event, its
// memoised frame and one non-blocking writev to a real TCP socket
// whose peer drains it. It must not allocate.
func BenchmarkDeliverPublisherWrite(b *testing.B) {
	c, sub, _ := newFlushConn(b, 1<<20)
	c.pos = []string{"3f9a1c2e-0"}
	evs := make([]*broker.Event, 64)
	for i := range evs {
		evs[i] = &broker.Event{Topic: "a", ID: fmt.Sprintf("3f9a1c2e-%d", i+1), Data: strings.Repeat("x", 100), Time: time.Now()}
		evs[i].Memo(encodeBrokerEvent)
	}
	for _, ev := range evs { // warm the pool and the connection state
		sub.Push(ev)
		c.flush()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sub.Push(evs[i%len(evs)])
		i++
		c.flush()
		if len(c.held) > 0 {
			b.Fatal("events held back")
		}
		if c.pending != nil || c.werr != nil {
			// The peer fell behind: let it catch up (rare; allocates).
			if reason := c.pull(); reason != "" {
				b.Fatal(reason, c.werr)
			}
		}
	}
}

// BenchmarkFullStack publishes events through membroker and a TopicHandler
// to N real HTTP connections and waits until every connection has every
// event. It reports deliveries per second.
func BenchmarkFullStack(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			br := membroker.New(membroker.Config{QueueLimit: 1 << 16})
			defer br.Close()
			h := &TopicHandler{Broker: br, Heartbeat: -1, Logger: discardLogger(), Hijack: true}
			srv := httptest.NewServer(h)
			defer srv.Close()
			tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}

			var got atomic.Int64
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range n {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events?topic=bench", nil)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer resp.Body.Close()
					r := bufio.NewReaderSize(resp.Body, 16<<10)
					for {
						line, err := r.ReadSlice('\n')
						if err != nil {
							return
						}
						if bytes.HasPrefix(line, []byte("data: ")) {
							got.Add(1)
						}
					}
				}()
			}
			for h.Connections() < n {
				time.Sleep(time.Millisecond)
			}
			msg := broker.Message{Data: strings.Repeat("x", 64)}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				// Flow control: stay well inside the queue limit, so the
				// benchmark measures delivery, not slow-consumer drops.
				for int64(i)*int64(n)-got.Load() > int64(n)*4096 {
					time.Sleep(50 * time.Microsecond)
				}
				if _, err := br.Publish(context.Background(), "bench", msg); err != nil {
					b.Fatal(err)
				}
			}
			want := int64(b.N) * int64(n)
			for got.Load() < want {
				if h.Connections() < n {
					b.Fatalf("a connection was dropped (%d of %d left)", h.Connections(), n)
				}
				time.Sleep(100 * time.Microsecond)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(want)/el.Seconds(), "deliveries/s")
			cancel()
			wg.Wait()
		})
	}
}
