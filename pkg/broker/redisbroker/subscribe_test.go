package redisbroker

import (
	"fmt"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// The last local subscriber of a topic leaves and a new one arrives at
// once, again and again, while the UNSUBSCRIBE of the previous round may
// still be in flight: each new subscriber must get every later event.
func TestResubscribeRace(t *testing.T) {
	r := testredis.Start(t)
	a := newBroker(t, r, Config{Logger: warnLogger()})
	p := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("flap")
	publishN(t, p, topic, 1)
	for i := range 60 {
		sub, err := a.Subscribe(t.Context(), []string{topic}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rd := brokertest.NewReader(sub)
		pos := position(t, rd, topic)
		id := publishRetry(t, p, topic, broker.Message{Data: fmt.Sprint(i)})
		if !rd.Until(10*time.Second, func(r *brokertest.Reader) bool { return r.LastID(topic) == id }) {
			t.Fatalf("round %d: the event published after the subscription never came: %s", i, rd)
		}
		brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Position: pos, IDs: []string{id}})
		sub.Close()
		if i%3 == 0 {
			// Sometimes give the UNSUBSCRIBE a head start.
			time.Sleep(time.Duration(i%7) * time.Millisecond)
		}
	}
}
