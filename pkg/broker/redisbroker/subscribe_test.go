package redisbroker

import (
	"fmt"
	"strings"
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

// A subscriber without a cursor to a topic this replica already follows in
// sync joins the live subscribers where they are: its position is the last
// event they received, it gets every later event once and in order, and
// its Subscribe costs Redis no command at all (a burst of new subscribers
// to a followed topic makes no burst of reads).
func TestSubscribeJoinsFollowedTopic(t *testing.T) {
	r := testredis.Start(t)
	a := newBroker(t, r, Config{Logger: warnLogger()})
	p := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("join")
	publishN(t, p, topic, 3)
	first := subscribe(t, a, []string{topic}, nil)
	position(t, first, topic)
	last := publishN(t, p, topic, 1)[0]
	waitLast(t, first, topic, last)

	rdb := r.Client(t)
	if err := rdb.ConfigResetStat(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	const n = 50
	joined := make([]*brokertest.Reader, n)
	for i := range joined {
		joined[i] = subscribe(t, a, []string{topic}, nil)
	}
	stats, err := rdb.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var calls []string
	for line := range strings.SplitSeq(stats, "\n") {
		if strings.HasPrefix(line, "cmdstat_") && !strings.HasPrefix(line, "cmdstat_info:") && !strings.HasPrefix(line, "cmdstat_config|resetstat:") {
			calls = append(calls, strings.TrimSpace(line))
		}
	}
	if len(calls) > 0 {
		t.Errorf("%d subscribers joining a followed topic sent Redis commands: %q", n, calls)
	}

	later := publishN(t, p, topic, 3)
	for i, rd := range joined {
		if pos := position(t, rd, topic); pos != last {
			t.Fatalf("subscriber %d: position %s, want %s (the last event the live subscribers have)", i, pos, last)
		}
		waitLast(t, rd, topic, later[len(later)-1])
		brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Position: last, IDs: later})
	}
	waitLast(t, first, topic, later[len(later)-1])
}
