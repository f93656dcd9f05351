package redisbroker

import (
	"strings"
	"testing"

	"github.com/herald-sse/herald/internal/testredis"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/brokertest"
)

// Odd but valid topic names (hash-tag braces, glob characters, a name that
// looks like another topic's key suffix) and payloads (1 MiB, NUL,
// invalid UTF-8, blank lines) go through FCALL and pub/sub unchanged and
// stay apart.
func TestOddTopicsAndPayloads(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	base := uniqueTopic("odd")
	topics := []string{base, base + "}:s", "{" + base, base + "}", base + "*?[a]", base + "\"\\%'", base + ":{x}:e", (base + strings.Repeat("~", 256))[:256]}
	payloads := []string{"", "\x00", "a\x00b\n\nc\r\n", "\xff\xfe\xc3(", strings.Repeat("0123456789abcdef", 1<<16), "\n", "tail\r"}
	rd := subscribe(t, b, topics, nil)
	for _, topic := range topics {
		position(t, rd, topic)
	}
	want := map[string][]string{}
	data := map[string]string{}
	for i, topic := range topics {
		for j, d := range payloads {
			var id string
			var err error
			if (i+j)%2 == 0 {
				id, err = b.Publish(t.Context(), topic, broker.Message{Type: "ü-type", Data: d})
			} else {
				id, err = c.FCall(t.Context(), "herald_publish", []string{topic}, "ü-type", d).Text()
			}
			if err != nil {
				t.Fatalf("publish to %q: %v", topic, err)
			}
			want[topic] = append(want[topic], id)
			data[topic+" "+id] = d
		}
	}
	if !rd.Until(waitTimeout, func(r *brokertest.Reader) bool { return r.Total() >= len(topics)*len(payloads) }) {
		t.Fatalf("got %s", rd)
	}
	for _, topic := range topics {
		seq, _ := brokertest.CheckSequence(t, topic, rd.Items[topic], brokertest.Want{IDs: want[topic]})
		for _, e := range seq.Events {
			if e.Data != data[topic+" "+e.ID] || e.Type != "ü-type" {
				t.Errorf("topic %q, event %q: type %q, data %.20q (%d bytes), want %.20q (%d bytes)",
					topic, e.ID, e.Type, e.Data, len(e.Data), data[topic+" "+e.ID], len(data[topic+" "+e.ID]))
			}
		}
		// Replay from the stream returns the same bytes.
		rr := subscribe(t, b, []string{topic}, broker.Cursor{topic: "0-0-0"})
		waitLast(t, rr, topic, want[topic][len(want[topic])-1])
		seq, _ = brokertest.CheckSequence(t, topic, rr.Items[topic], brokertest.Want{IDs: want[topic]})
		for _, e := range seq.Events {
			if e.Data != data[topic+" "+e.ID] {
				t.Errorf("replay of topic %q, event %q: data differs", topic, e.ID)
			}
		}
		rr.Sub.Close()
	}
}

// FCALL from a plain client with wrong arguments fails cleanly, leaves no
// key behind, and the broker carries on.
func TestFCallArguments(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client(t)
	b := newBroker(t, r, Config{Logger: warnLogger()})
	topic := uniqueTopic("args")
	rd := subscribe(t, b, []string{topic}, nil)
	position(t, rd, topic)
	ctx := t.Context()
	for _, tc := range []struct {
		fn   string
		keys []string
		args []any
	}{
		{"herald_publish", nil, nil},
		{"herald_publish", nil, []any{"t", "d"}},
		{"herald_publish", []string{topic}, nil},
		{"herald_publish", []string{topic}, []any{"t", "d", "key", "extra"}},
		{"herald_publish", []string{topic}, []any{"t", "d", "bad key"}},
		{"herald_publish", []string{topic}, []any{"t", "d", strings.Repeat("k", 129)}},
		{"herald_publish", []string{""}, []any{"t", "d"}},
		{"herald_read", nil, nil},
		{"herald_read", []string{""}, []any{"0-0", "10"}},
	} {
		if err := c.FCall(ctx, tc.fn, tc.keys, tc.args...).Err(); err == nil {
			t.Errorf("FCALL %s %q %q succeeded", tc.fn, tc.keys, tc.args)
		}
	}
	// The subscription gave the topic its epoch and an empty stream
	// (touch); the rejected calls add nothing.
	if n := c.Exists(ctx, "herald:{}:s", "herald:{}:e").Val(); n != 0 {
		t.Errorf("rejected calls created %d keys", n)
	}
	if n := c.XLen(ctx, "herald:{"+topic+"}:s").Val(); n != 0 {
		t.Errorf("rejected calls added %d entries", n)
	}
	// Once the stream exists, a malformed read position is an error.
	if _, err := b.Publish(ctx, topic, broker.Message{Data: "first"}); err != nil {
		t.Fatal(err)
	}
	if err := c.FCall(ctx, "herald_read", []string{topic}, "not-an-id", "10").Err(); err == nil {
		t.Errorf("FCALL herald_read with a malformed position succeeded")
	}
	// The publish function writes: FCALL_RO must refuse it.
	if err := c.FCallRO(ctx, "herald_publish", []string{topic}, "", "x").Err(); err == nil {
		t.Errorf("FCALL_RO herald_publish succeeded")
	}
	id := publishRetry(t, b, topic, broker.Message{Data: "ok"})
	waitLast(t, rd, topic, id)
	if n := rd.Count(topic); n != 2 {
		t.Errorf("%d events, want 2: %s", n, rd)
	}
}
