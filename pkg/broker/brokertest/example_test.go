package brokertest_test

import (
	"context"
	"fmt"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// A Reader gathers a subscription's items per topic; ParseSequence checks
// their shape (optional reset, position, events) and splits them.
func ExampleReader() {
	ctx := context.Background()
	b := membroker.New(membroker.Config{})
	defer b.Close()

	sub, err := b.Subscribe(ctx, []string{"news"}, nil)
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	id, err := b.Publish(ctx, "news", broker.Message{Type: "headline", Data: "hello"})
	if err != nil {
		panic(err)
	}

	r := brokertest.NewReader(sub)
	r.Until(10*time.Second, func(r *brokertest.Reader) bool { return r.Count("news") == 1 })
	seq, err := brokertest.ParseSequence("news", r.Items["news"])
	fmt.Println(err, seq.Reset == nil, seq.Last() == id, seq.Events[0].Type, seq.Events[0].Data)
	// Output: <nil> true true headline hello
}
