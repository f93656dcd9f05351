package server

import (
	"context"
	"strconv"
	"sync"

	"github.com/herald-sse/herald/pkg/broker"
)

// fakeBroker records publishes and fails them with err when set. It cannot
// subscribe; tests that stream use the real in-process broker.
type fakeBroker struct {
	mu        sync.Mutex
	err       error
	published []fakePublish
	closed    bool
	// hang, if set, makes Publish wait for its ctx and return what hang
	// makes of ctx.Err().
	hang func(error) error
}

type fakePublish struct {
	Topic string
	Msg   broker.Message
}

func (b *fakeBroker) Publish(ctx context.Context, topic string, msg broker.Message) (string, error) {
	if b.hang != nil {
		<-ctx.Done()
		return "", b.hang(ctx.Err())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return "", b.err
	}
	if err := broker.ValidateTopic(topic); err != nil {
		return "", err
	}
	b.published = append(b.published, fakePublish{topic, msg})
	return "id-" + strconv.Itoa(len(b.published)), nil
}

func (b *fakeBroker) Subscribe(ctx context.Context, topics []string, from broker.Cursor) (broker.Subscription, error) {
	return nil, broker.ErrUnavailable
}

func (b *fakeBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

func (b *fakeBroker) last() (fakePublish, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.published) == 0 {
		return fakePublish{}, 0
	}
	return b.published[len(b.published)-1], len(b.published)
}
