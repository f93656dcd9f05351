package redisbroker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/redis/go-redis/v9"
)

// Publishes share round trips: a publish that finds fewer than
// pipelinesInFlight pipelines in flight is sent at once by its own
// goroutine (no timer waits for company); publishes that arrive while the
// limit is reached queue up, and when a pipeline is answered the whole
// queue goes out as the next one, on one connection. Order is kept where
// it is defined: a publish that returned before another started is ahead
// of it in its topic's log (it was answered, hence applied, before the
// other was sent), and a batch's events go in one pipeline, in order.
const (
	pipelinesInFlight = 2
	pipelineMax       = 512     // commands per pipeline (a bigger batch goes alone)
	pipelineBytes     = 4 << 20 // bytes of event data per pipeline (idem)
)

// pubCall is one publish: its topic, message and result.
type pubCall struct {
	topic string
	msg   broker.Message
	res   broker.PublishResult
}

// pubGroup is what one caller submits: one publish or a batch. Its calls
// go out together, in order, in one pipeline.
type pubGroup struct {
	ctx   context.Context
	calls []pubCall
	one   [1]pubCall    // calls of a single publish
	done  chan struct{} // closed when the results are set; nil for a leader
	sent  bool          // taken into a pipeline; guarded by pipeliner.mu
}

// pipeliner is the queue of publishes waiting for a pipeline.
type pipeliner struct {
	limit    int // pipelines in flight at most (pipelinesInFlight; tests change it)
	mu       sync.Mutex
	inFlight int         // pipelines being sent or awaited
	queue    []*pubGroup // waiting, in arrival order; empty unless inFlight is at the limit
}

// submit publishes g's calls and returns once their results are set, or
// with ctx's error when ctx ends first: nothing of g was sent if it was
// still queued, and the outcome is unknown if it was in flight.
func (b *Broker) submit(g *pubGroup) error {
	p := &b.pipe
	p.mu.Lock()
	if p.inFlight < p.limit { // then nothing is queued
		p.inFlight++
		g.sent = true
		p.mu.Unlock()
		b.lead(g)
		return nil
	}
	p.queue = append(p.queue, g)
	g.done = make(chan struct{})
	p.mu.Unlock()
	select {
	case <-g.done:
		return nil
	case <-g.ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !g.sent {
		for i, q := range p.queue {
			if q == g {
				p.queue = append(p.queue[:i], p.queue[i+1:]...)
				break
			}
		}
	}
	return g.ctx.Err()
}

// lead sends one pipeline: self alone (a caller that found a free slot;
// nothing is queued then), or with self nil the head of the queue, whose
// groups it then wakes. If more wait by then, a new goroutine takes over
// this pipeline slot for them; else the slot is freed.
func (b *Broker) lead(self *pubGroup) {
	p := &b.pipe
	if self != nil {
		b.run([]*pubGroup{self}, len(self.calls))
	} else {
		p.mu.Lock()
		n, size, k := 0, 0, 0
		for k < len(p.queue) {
			g := p.queue[k]
			if k > 0 && (n+len(g.calls) > pipelineMax || size >= pipelineBytes) {
				break
			}
			g.sent = true
			n += len(g.calls)
			for i := range g.calls {
				size += len(g.calls[i].msg.Data)
			}
			k++
		}
		if k == 0 { // everything queued withdrew meanwhile
			p.inFlight--
			p.mu.Unlock()
			return
		}
		batch := make([]*pubGroup, k)
		copy(batch, p.queue)
		p.queue = append(p.queue[:0], p.queue[k:]...)
		p.mu.Unlock()
		b.run(batch, n)
		for _, g := range batch {
			close(g.done)
		}
	}
	p.mu.Lock()
	more := len(p.queue) > 0
	if !more {
		p.inFlight--
	}
	p.mu.Unlock()
	if more {
		go b.lead(nil)
	}
}

// run sends the calls of batch (n in all) and sets their results.
func (b *Broker) run(batch []*pubGroup, n int) {
	ctx, cancel := pipelineContext(batch)
	defer cancel()
	if n == 1 && b.waitReplicas == 0 {
		// One FCALL, no pipeline (in Cluster on the primary's own client:
		// see fcall).
		c := &batch[0].calls[0]
		v, err := b.fcall(ctx, false, b.publishFn, b.keys(c.topic, c.msg.Key), publishArgs(c.msg)...)
		c.res = b.publishResult(v, err)
		return
	}
	calls := make([]*pubCall, 0, n)
	for _, g := range batch {
		for i := range g.calls {
			calls = append(calls, &g.calls[i])
		}
	}
	if !b.loaded.Load() {
		if err := b.load(ctx); err != nil {
			for _, c := range calls {
				c.res = b.publishResult(nil, err)
			}
			return
		}
	}
	cmds, waits := b.pipeline(ctx, calls)
	var again []*pubCall
	for i, c := range calls {
		if isFunctionMissing(cmds[i].Err()) {
			again = append(again, c)
			continue
		}
		c.res = b.waited(b.publishResult(cmds[i].Result()), waitOf(waits, i))
	}
	if len(again) == 0 {
		return
	}
	// Redis lost the library (restart without persistence, FUNCTION
	// FLUSH): none of these ran. Load it and send them again, in order.
	b.log.Warn("redisbroker: function library missing on the server; loading it again", "library", b.libName)
	if err := b.load(ctx); err != nil {
		for _, c := range again {
			c.res = b.publishResult(nil, err)
		}
		return
	}
	cmds, waits = b.pipeline(ctx, again)
	for i, c := range again {
		c.res = b.waited(b.publishResult(cmds[i].Result()), waitOf(waits, i))
	}
}

// pipeline sends one FCALL <prefix>_publish per call as one pipeline, and
// with Config.WaitReplicas a WAIT after them, on the same connection:
// WAIT cannot run inside a function, and on the connection that wrote the
// events it counts the replicas that acknowledged all of them. waits[i]
// is the WAIT of calls[i]'s connection; waits is nil without WaitReplicas.
//
// In Redis Cluster there is one pipeline per primary, sent concurrently on
// that primary's own connection (its client never retries: see
// Config.Client), rather than through the ClusterClient, whose pipelines
// and commands are sent again after an EOF or a timeout — when Redis may
// have run them — whatever MaxRetries says. A redirect (MOVED, ASK: the
// slot moved or is moving) fails the publish with broker.ErrUnavailable:
// Redis did not run it, and the cluster state is reloaded for the retry.
func (b *Broker) pipeline(ctx context.Context, calls []*pubCall) (cmds []*redis.Cmd, waits []*redis.IntCmd) {
	if cc, ok := b.rdb.(*redis.ClusterClient); ok {
		return b.clusterPipeline(ctx, cc, calls)
	}
	cmds = make([]*redis.Cmd, len(calls))
	pipe := b.rdb.Pipeline()
	for i, c := range calls {
		cmds[i] = pipe.FCall(ctx, b.publishFn, b.keys(c.topic, c.msg.Key), publishArgs(c.msg)...)
	}
	if b.waitReplicas > 0 {
		wait := redis.NewIntCmd(ctx, "wait", b.waitReplicas, b.waitTimeout.Milliseconds())
		_ = pipe.Process(ctx, wait)
		waits = make([]*redis.IntCmd, len(calls))
		for i := range waits {
			waits[i] = wait
		}
	}
	// Exec's error is the first command's; every command carries its own.
	_, _ = pipe.Exec(ctx)
	return cmds, waits
}

func (b *Broker) clusterPipeline(ctx context.Context, cc *redis.ClusterClient, calls []*pubCall) (cmds []*redis.Cmd, waits []*redis.IntCmd) {
	cmds = make([]*redis.Cmd, len(calls))
	if b.waitReplicas > 0 {
		waits = make([]*redis.IntCmd, len(calls))
	}
	type nodePipe struct {
		pipe redis.Pipeliner
		wait *redis.IntCmd
	}
	var order []*nodePipe
	byNode := map[*redis.Client]*nodePipe{}
	for i, c := range calls {
		keys := b.keys(c.topic, c.msg.Key)
		node, err := b.primaryFor(ctx, cc, keys[0])
		if err != nil {
			cmds[i] = redis.NewCmd(ctx)
			cmds[i].SetErr(err)
			continue
		}
		np := byNode[node]
		if np == nil {
			np = &nodePipe{pipe: node.Pipeline()}
			if b.waitReplicas > 0 {
				np.wait = redis.NewIntCmd(ctx, "wait", b.waitReplicas, b.waitTimeout.Milliseconds())
			}
			byNode[node] = np
			order = append(order, np)
		}
		cmds[i] = np.pipe.FCall(ctx, b.publishFn, keys, publishArgs(c.msg)...)
		if waits != nil {
			waits[i] = np.wait
		}
	}
	exec := func(np *nodePipe) {
		if np.wait != nil {
			_ = np.pipe.Process(ctx, np.wait)
		}
		_, _ = np.pipe.Exec(ctx)
	}
	if len(order) == 1 {
		exec(order[0])
	} else {
		var wg sync.WaitGroup
		for _, np := range order {
			wg.Go(func() { exec(np) })
		}
		wg.Wait()
	}
	for _, cmd := range cmds {
		err := cmd.Err()
		if err == nil {
			continue
		}
		if msg := err.Error(); !isServerError(err) || strings.HasPrefix(msg, "MOVED") || strings.HasPrefix(msg, "ASK") || strings.HasPrefix(msg, "CLUSTERDOWN") {
			// A redirect, or a primary that does not answer in time
			// (a failover may be promoting its replica): read the slot
			// map again (asynchronously; the publish fails meanwhile).
			cc.ReloadState(ctx)
			b.signalRoute()
			break
		}
	}
	return cmds, waits
}

func waitOf(waits []*redis.IntCmd, i int) *redis.IntCmd {
	if waits == nil {
		return nil
	}
	return waits[i]
}

// waited turns a publish's result into an error unless wait (nil without
// Config.WaitReplicas) confirmed enough replicas.
func (b *Broker) waited(res broker.PublishResult, wait *redis.IntCmd) broker.PublishResult {
	if wait == nil || res.Err != nil {
		return res
	}
	n, err := wait.Result()
	switch {
	case err != nil:
		return broker.PublishResult{Err: fmt.Errorf("%w: %w: appended as %s, but WAIT failed (%v); retrying with the same idempotency key is safe", broker.ErrUnavailable, ErrNotReplicated, res.ID, err)}
	case n < int64(b.waitReplicas):
		return broker.PublishResult{Err: fmt.Errorf("%w: %w: appended as %s, but %d of %d replicas confirmed it within %v; retrying with the same idempotency key is safe", broker.ErrUnavailable, ErrNotReplicated, res.ID, n, b.waitReplicas, b.waitTimeout)}
	}
	return res
}

// publishArgs are the arguments of FCALL <prefix>_publish after the topic.
func publishArgs(m broker.Message) []any {
	if m.Key == "" {
		return []any{m.Type, m.Data}
	}
	return []any{m.Type, m.Data, m.Key}
}

// publishResult turns an FCALL reply into a result.
func (b *Broker) publishResult(v any, err error) broker.PublishResult {
	if err != nil {
		return broker.PublishResult{Err: b.publishError(err)}
	}
	id, _ := v.(string)
	if _, _, ok := parseID(id); !ok {
		return broker.PublishResult{Err: fmt.Errorf("redisbroker: unexpected reply to %s: %v", b.publishFn, v)}
	}
	return broker.PublishResult{ID: id}
}

// pipelineContext is the context a pipeline is sent with: a lone group's
// own; for several, none of theirs (one caller giving up must not fail the
// others' publishes) but the latest of their deadlines, or none if one of
// them has none (the client's read timeout still bounds the wait).
func pipelineContext(batch []*pubGroup) (context.Context, context.CancelFunc) {
	if len(batch) == 1 {
		return batch[0].ctx, func() {}
	}
	var latest time.Time
	for _, g := range batch {
		d, ok := g.ctx.Deadline()
		if !ok {
			return context.WithoutCancel(batch[0].ctx), func() {}
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
