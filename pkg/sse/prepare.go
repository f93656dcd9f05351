package sse

import (
	"bytes"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

func (c *topicStream) index(topic string) int {
	for i, t := range c.topics {
		if t == topic {
			return i
		}
	}
	return -1
}

// prepare turns a batch of items into the pieces to write (b.bufs), all
// written with one writev. One-topic streams write each event's shared
// frame as it is; multi-topic streams write their composite id line and the
// frame's body. Call with mu held, as the stream's writer.
func (c *topicStream) prepare(b *batch) {
	m := &c.h.Metrics
	var now time.Time
	if m.Delivered != nil {
		now = time.Now()
	}
	replayed := 0
	single := len(c.topics) == 1
	if !single {
		// A topic's first position is its first item (after a reset):
		// take it before writing any id, so that an event of another topic
		// earlier in the batch does not go out without this topic's place.
		for i := range c.pos {
			if c.pos[i] != "" {
				continue
			}
			for _, ev := range b.items {
				if ev.Kind == broker.KindPosition && ev.Topic == c.topics[i] {
					c.pos[i] = ev.ID
					c.posMove = true
					break
				}
			}
		}
	}
	bufs, idbuf := b.bufs[:0], b.idbuf[:0]
	for _, ev := range b.items {
		i := c.index(ev.Topic)
		if i < 0 {
			continue // not ours; a broker bug, but never a wire problem
		}
		switch ev.Kind {
		case broker.KindEvent:
			c.pos[i] = ev.ID
			frame := ev.Memo(encodeBrokerEvent)
			if single {
				bufs = append(bufs, frame)
				c.sent = append(c.sent[:0], ev.ID...)
			} else {
				// Earlier pieces of idbuf stay valid if it grows: they keep
				// the old array.
				at := len(idbuf)
				idbuf = append(idbuf, "id: "...)
				idbuf = appendCursor(idbuf, c.tags, c.pos)
				idbuf = append(idbuf, '\n')
				bufs = append(bufs, idbuf[at:len(idbuf):len(idbuf)], frameBody(frame))
				c.sent = append(c.sent[:0], idbuf[at+4:len(idbuf)-1]...)
			}
			c.posMove = false
			switch {
			case ev.Time.IsZero() || ev.Time.UnixNano() >= c.start:
				if m.Delivered != nil {
					m.Delivered(ev, now)
				}
			case c.why != nil && c.why[i] != "":
				if m.Replayed != nil {
					m.Replayed(1, c.why[i]) // rare: after a reset only
				}
			default:
				replayed++
			}
		case broker.KindPosition:
			if c.pos[i] != ev.ID {
				c.pos[i] = ev.ID
				c.posMove = true
			}
		case broker.KindReset:
			at := len(idbuf)
			idbuf = appendReset(idbuf, ev.Topic, ev.Reason)
			bufs = append(bufs, idbuf[at:len(idbuf):len(idbuf)])
			if c.why == nil {
				c.why = make([]broker.ResetReason, len(c.topics))
			}
			c.why[i] = ev.Reason
			if m.Reset != nil {
				m.Reset(ev.Topic, ev.Reason)
			}
		}
	}
	if c.posMove {
		c.posMove = false
		at := len(idbuf)
		idbuf = appendCursor(idbuf, c.tags, c.pos)
		if cur := idbuf[at:]; len(cur) > 0 && !bytes.Equal(cur, c.sent) {
			c.sent = append(c.sent[:0], cur...)
			idbuf = append(append(append(idbuf[:at], "id: "...), c.sent...), '\n', '\n')
			bufs = append(bufs, idbuf[at:len(idbuf):len(idbuf)])
		}
	}
	if replayed > 0 && m.Replayed != nil {
		m.Replayed(replayed, "")
	}
	b.bufs, b.idbuf = bufs, idbuf
}
