package sse

import (
	"bytes"
	"encoding/json"

	"github.com/herald-sse/herald/pkg/broker"
)

// heartbeatFrame is the comment that keeps an idle stream open through
// proxies.
var heartbeatFrame = []byte(":\n\n")

// encodeBrokerEvent is the memoised wire form of a broker event: its own id
// line (what a one-topic stream sends as is), then the event and data
// lines. Multi-topic streams skip the id line and write their composite
// cursor instead. Brokers validate IDs and types, so encoding cannot fail;
// a bad one would be written without the offending field rather than
// injecting one.
func encodeBrokerEvent(ev *broker.Event) []byte {
	e := Event{ID: ev.ID, Type: ev.Type, Data: ev.Data}
	b, err := AppendEvent(make([]byte, 0, 16+len(ev.ID)+len(ev.Type)+len(ev.Data)), &e)
	if err != nil {
		e.ID, e.Type = "", ""
		b, _ = AppendEvent(b[:0], &e)
	}
	return b
}

// frameBody returns a memoised frame without its leading id line.
func frameBody(frame []byte) []byte {
	if bytes.HasPrefix(frame, []byte("id: ")) {
		return frame[bytes.IndexByte(frame, '\n')+1:]
	}
	return frame
}

// appendReset appends the reset event (ResetEventType) for topic.
func appendReset(dst []byte, topic string, reason broker.ResetReason) []byte {
	data, _ := json.Marshal(struct {
		Topic  string             `json:"topic"`
		Reason broker.ResetReason `json:"reason"`
	}{topic, reason})
	dst = append(dst, "event: "+ResetEventType+"\ndata: "...)
	dst = append(dst, data...)
	return append(dst, '\n', '\n')
}
