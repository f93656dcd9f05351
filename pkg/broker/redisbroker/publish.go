package redisbroker

import (
	"context"

	"github.com/herald-sse/herald/pkg/broker"
)

// Publish implements broker.Broker: one FCALL <prefix>_publish, in a
// pipeline with other publishes when some are waiting (see pipeline.go). With
// msg.Key, a retry within Config.IdempotencyWindow returns the first ID and
// appends nothing. Errors that mean Redis could not be reached or did not
// answer in time (including ctx's deadline) wrap broker.ErrUnavailable;
// such a publish may still have been applied (Redis ran it but its reply
// was lost), so a publisher that retries without a key may publish an
// event twice, under two IDs. The client the broker
// creates from Config.URL never sends it again by itself; see Config.Client
// for a client of the caller's.
func (b *Broker) Publish(ctx context.Context, topic string, msg broker.Message) (string, error) {
	if err := validate(topic, msg); err != nil {
		return "", err
	}
	if b.isClosed.Load() {
		return "", broker.ErrClosed
	}
	g := &pubGroup{ctx: ctx}
	g.one[0] = pubCall{topic: topic, msg: msg}
	g.calls = g.one[:]
	if err := b.submit(g); err != nil {
		return "", b.publishError(err)
	}
	r := g.calls[0].res
	return r.ID, r.Err
}

// PublishBatch implements broker.BatchPublisher: the batch's valid events
// go to Redis in one pipeline (with other publishes in flight, if any; a
// batch over 512 events or 4 MiB of data goes in a pipeline of its own),
// in batch order. An event that is invalid, or that Redis refuses (a key
// conflict), fails alone. Errors are those of Publish.
func (b *Broker) PublishBatch(ctx context.Context, batch []broker.Publication) []broker.PublishResult {
	res := make([]broker.PublishResult, len(batch))
	g := &pubGroup{ctx: ctx, calls: make([]pubCall, 0, len(batch))}
	idx := make([]int, 0, len(batch))
	for i, p := range batch {
		if err := validate(p.Topic, p.Message); err != nil {
			res[i].Err = err
			continue
		}
		g.calls = append(g.calls, pubCall{topic: p.Topic, msg: p.Message})
		idx = append(idx, i)
	}
	if len(g.calls) == 0 {
		return res
	}
	if b.isClosed.Load() {
		for _, i := range idx {
			res[i].Err = broker.ErrClosed
		}
		return res
	}
	if err := b.submit(g); err != nil {
		for _, i := range idx {
			res[i].Err = b.publishError(err)
		}
		return res
	}
	for k, i := range idx {
		res[i] = g.calls[k].res
	}
	return res
}

func validate(topic string, msg broker.Message) error {
	if err := broker.ValidateTopic(topic); err != nil {
		return err
	}
	return broker.ValidateMessage(msg)
}
