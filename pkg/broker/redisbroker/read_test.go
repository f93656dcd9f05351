package redisbroker

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// Events of up to 1 MiB (the server's default body limit) with a history
// of 1000 must not make a replay page a reply of a gigabyte, which never
// arrives within a read timeout and stalls Redis for every replica: pages
// are bounded in bytes, and a replay reads short pages to the end.
func TestFatEventsReplay(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("fat")
	data := strings.Repeat("x", 1<<20)
	var ids []string
	for i := range 12 {
		ids = append(ids, publishRetry(t, b, topic, broker.Message{Data: fmt.Sprint(i, data)}))
	}
	v, err := c.FCallRO(t.Context(), "herald_read", []string{topic}, "0-0", "1000").Result()
	if err != nil {
		t.Fatal(err)
	}
	page, err := parseReadResult(v)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(page.entries); n == 0 || n*len(data) > readBytes+len(data) {
		t.Errorf("a page holds %d entries of 1 MiB, want at least one and at most %d bytes", n, readBytes)
	}
	rd := subscribe(t, b, []string{topic}, broker.Cursor{topic: "0-0-0"})
	waitLast(t, rd, topic, ids[len(ids)-1])
	seq, _ := brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{Position: "0-0-0", IDs: ids})
	for i, e := range seq.Events {
		if e.Data != fmt.Sprint(i, data) {
			t.Errorf("event %d: %d bytes of data differ", i, len(e.Data))
		}
	}
}
