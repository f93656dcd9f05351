package redisbroker_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/redisbroker"
)

// Every replica of a deployment runs a Broker like this one against the
// same Redis; a client may resume on any of them with the ID of the last
// event it saw.
func Example() {
	ctx := context.Background()
	b, err := redisbroker.New(ctx, redisbroker.Config{
		URL:         "redis://localhost:6379/0",
		HistorySize: 10000,
		HistoryTTL:  24 * time.Hour,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	sub, err := b.Subscribe(ctx, []string{"orders"}, broker.Cursor{"orders": "lz4k2m1q8s-1732685000000-0"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	// Another service: redis-cli FCALL herald_publish 1 orders created '{"id":42}'
	id, err := b.Publish(ctx, "orders", broker.Message{Type: "created", Data: `{"id":42}`})
	if err != nil {
		log.Fatal(err) // errors.Is(err, broker.ErrUnavailable) while Redis is away
	}
	fmt.Println("published", id)
	for range sub.Ready() {
		items, err := sub.Take(nil)
		for _, e := range items {
			switch e.Kind {
			case broker.KindReset:
				fmt.Println("history lost:", e.Reason)
			case broker.KindPosition:
				fmt.Println("resume point:", e.ID)
			case broker.KindEvent:
				fmt.Println(e.ID, e.Type, e.Data)
			}
		}
		if err != nil {
			return
		}
	}
}
