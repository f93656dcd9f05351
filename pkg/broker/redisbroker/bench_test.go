package redisbroker

import (
	"context"
	"fmt"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// impls returns the brokers compared by the benchmarks: this one on a
// fresh Redis container, and membroker, created per sub-benchmark.
func impls(b *testing.B, history int) []struct {
	name string
	new  func(b *testing.B) broker.Broker
} {
	r := testredis.Start(b)
	return []struct {
		name string
		new  func(b *testing.B) broker.Broker
	}{
		{"redis", func(b *testing.B) broker.Broker {
			return newBroker(b, r, Config{Prefix: fmt.Sprintf("bench%d", history), HistorySize: history, QueueLimit: 1 << 20, Logger: warnLogger()})
		}},
		{"mem", func(b *testing.B) broker.Broker {
			m := membroker.New(membroker.Config{HistorySize: history, QueueLimit: 1 << 20})
			b.Cleanup(func() { m.Close() })
			return m
		}},
	}
}

// BenchmarkPublish measures publish throughput without subscribers: one
// publisher, and 16 concurrent publishers per CPU (go-redis pipelines them
// over its connection pool).
func BenchmarkPublish(b *testing.B) {
	for _, impl := range impls(b, 1000) {
		b.Run(impl.name+"/serial", func(b *testing.B) {
			br := impl.new(b)
			ctx := context.Background()
			msg := broker.Message{Type: "bench", Data: "payload of a typical size, about sixty-four bytes long......"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := br.Publish(ctx, "bench-serial", msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
		b.Run(impl.name+"/parallel", func(b *testing.B) {
			br := impl.new(b)
			ctx := context.Background()
			msg := broker.Message{Type: "bench", Data: "payload of a typical size, about sixty-four bytes long......"}
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := br.Publish(ctx, "bench-parallel", msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkReplay measures a subscription that resumes 10,000 events back:
// Subscribe until the last replayed event is taken.
func BenchmarkReplay(b *testing.B) {
	const n = 10000
	for _, impl := range impls(b, 2*n) {
		b.Run(impl.name, func(b *testing.B) {
			br := impl.new(b)
			ctx := context.Background()
			var ids []string
			for i := range n + 1 {
				id, err := br.Publish(ctx, "bench-replay", broker.Message{Data: fmt.Sprint("event ", i)})
				if err != nil {
					b.Fatal(err)
				}
				ids = append(ids, id)
			}
			b.ReportAllocs()
			for b.Loop() {
				sub, err := br.Subscribe(ctx, []string{"bench-replay"}, broker.Cursor{"bench-replay": ids[0]})
				if err != nil {
					b.Fatal(err)
				}
				r := brokertest.NewReader(sub)
				if !r.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.Count("bench-replay") >= n }) {
					b.Fatalf("replay: %s", r)
				}
				sub.Close()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkFanout measures end-to-end delivery of one event to 10,000 live
// subscribers of one replica: publish, then take it from every
// subscription.
func BenchmarkFanout(b *testing.B) {
	const subs = 10000
	for _, impl := range impls(b, 1000) {
		b.Run(impl.name, func(b *testing.B) {
			br := impl.new(b)
			ctx := context.Background()
			readers := make([]*brokertest.Reader, subs)
			for i := range readers {
				sub, err := br.Subscribe(ctx, []string{"bench-fanout"}, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { sub.Close() })
				readers[i] = brokertest.NewReader(sub)
			}
			b.ReportAllocs()
			var buf []*broker.Event
			want := 0
			for b.Loop() {
				if _, err := br.Publish(ctx, "bench-fanout", broker.Message{Data: "fan-out"}); err != nil {
					b.Fatal(err)
				}
				want++
				for _, r := range readers {
					for got := 0; got < 1; {
						var err error
						buf, err = r.Sub.Take(buf[:0])
						if err != nil {
							b.Fatal(err)
						}
						for _, e := range buf {
							if e.Kind == broker.KindEvent {
								got++
							}
						}
						if got == 0 {
							<-r.Sub.Ready()
						}
					}
				}
			}
			b.ReportMetric(float64(subs*b.N)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}
