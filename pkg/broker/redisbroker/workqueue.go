package redisbroker

import "time"

// schedule queues a load round for t unless one is queued or running.
func (b *Broker) schedule(t *topic) {
	b.wmu.Lock()
	t.dirty = true
	if !t.queued && !t.running {
		t.queued = true
		b.work = append(b.work, t)
	}
	b.wmu.Unlock()
	select {
	case b.workCh <- struct{}{}:
	default:
	}
}

func (b *Broker) worker() {
	defer b.wg.Done()
	for {
		b.wmu.Lock()
		var t *topic
		if len(b.work) > 0 {
			t = b.work[0]
			b.work[0] = nil
			b.work = b.work[1:]
			t.queued, t.running, t.dirty = false, true, false
		}
		b.wmu.Unlock()
		if t == nil {
			select {
			case <-b.ctx.Done():
				return
			case <-b.workCh:
			}
			continue
		}
		again, err := b.round(t)
		if err != nil && b.ctx.Err() == nil {
			t.failures = min(t.failures+1, 10)
			d := min(50*time.Millisecond<<t.failures, maxBackoff)
			b.log.Debug("redisbroker: loading from stream failed; retrying", "topic", t.name, "in", d, "err", err)
			time.AfterFunc(d, func() { b.schedule(t) })
		} else if err == nil {
			t.failures = 0
		}
		b.wmu.Lock()
		t.running = false
		requeue := (again || t.dirty) && !t.queued
		if requeue {
			t.queued = true
			b.work = append(b.work, t)
		}
		b.wmu.Unlock()
		if requeue {
			select {
			case b.workCh <- struct{}{}:
			default:
			}
		}
	}
}
