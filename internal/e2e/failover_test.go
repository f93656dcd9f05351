package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestFailover is the fleet's promise: 300 clients over 10 topics (some on
// two topics) connected through HAProxy get every one of 3,000 events,
// published through POST /publish on random replicas and FCALL
// herald_publish, exactly once and in order, while one replica is killed
// (SIGKILL), another is stopped gracefully and restarted, and Redis is
// frozen for 5 s.
func TestFailover(t *testing.T) {
	const (
		nTopics     = 10
		nClients    = 300
		nPublishers = 6
		perPub      = 500 // 3,000 events in all
	)
	c := startCluster(t, haproxy)
	start := time.Now()

	topics := make([]string, nTopics)
	for i := range topics {
		topics[i] = fmt.Sprintf("fo%d", i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subs := make([]*subscriber, nClients)
	for i := range subs {
		ts := []string{topics[i%nTopics]}
		if i%5 == 0 { // every fifth client follows two topics
			ts = append(ts, topics[(i+3)%nTopics])
		}
		subs[i] = subscribe(ctx, c.LB, ts)
	}
	poll(t, 60*time.Second, "every client's first connection", func() bool {
		for _, s := range subs {
			if s.opens.Load() == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("%d clients connected through %s in %v", nClients, c.lbKind, time.Since(start).Round(time.Millisecond))

	// Publishers run in the background at about 100 events/s in all; the
	// test goroutine drives the failures by the number published.
	p := newPublisher(c)
	pubCtx, pubCancel := context.WithTimeout(ctx, 4*time.Minute)
	defer pubCancel()
	var wg sync.WaitGroup
	errs := make(chan error, nPublishers)
	for k := 0; k < nPublishers; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(k), 42))
			for seq := 0; seq < perPub; seq++ {
				topic := topics[rng.IntN(nTopics)]
				if err := p.publish(pubCtx, rng, (seq+k)%2 == 0, topic, k, seq, 90*time.Second); err != nil {
					errs <- err
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	published := make(chan struct{})
	go func() { wg.Wait(); close(published) }()

	at := func(n int64, what string) {
		t.Helper()
		poll(t, 3*time.Minute, fmt.Sprintf("%d events published (before: %s)", n, what), func() bool {
			select {
			case err := <-errs:
				t.Fatalf("publisher: %v", err)
			default:
			}
			return p.count.Load() >= n
		})
		t.Logf("%6.1fs  %4d published: %s", time.Since(start).Seconds(), p.count.Load(), what)
	}
	h1, h2 := c.Replicas[0], c.Replicas[1]
	at(400, "SIGKILL "+h1.Name)
	c.Kill(h1)
	at(900, "SIGTERM "+h2.Name)
	code, took := c.Stop(h2)
	t.Logf("%s drained in %v, exit code %d", h2.Name, took.Round(time.Millisecond), code)
	if code != 0 {
		t.Errorf("%s exited with %d after SIGTERM, want 0 (a clean drain)", h2.Name, code)
	}
	c.Start(h2)
	t.Logf("%6.1fs  %s restarted", time.Since(start).Seconds(), h2.Name)
	at(1500, "restart "+h1.Name)
	c.Start(h1)
	at(2000, "pause Redis for 5s")
	c.PauseRedis()
	time.Sleep(5 * time.Second)
	c.UnpauseRedis()
	t.Logf("%6.1fs  Redis unpaused", time.Since(start).Seconds())

	select {
	case <-published:
	case <-time.After(4 * time.Minute):
		t.Fatal("publishers did not finish within 4 minutes")
	}
	close(errs)
	for err := range errs {
		t.Fatalf("publisher: %v", err)
	}
	t.Logf("%6.1fs  all %d events published (%d failed attempts retried)", time.Since(start).Seconds(), p.count.Load(), p.fails.Load())

	logs := waitComplete(t, c, subs, topics, 90*time.Second)
	stopAll(t, cancel, subs)
	total, reconnects := 0, 0
	for _, l := range logs {
		total += len(l)
	}
	for _, s := range subs {
		reconnects += int(s.opens.Load()) - 1
	}
	if total < nPublishers*perPub {
		t.Errorf("the streams hold %d events, fewer than the %d published", total, nPublishers*perPub)
	}
	checkPublished(t, p, logs)
	verify(t, subs, logs)
	t.Logf("%6.1fs  verified: %d events in the streams, %d client reconnects", time.Since(start).Seconds(), total, reconnects)
}

// TestGracefulDrain: the clients of a replica stopped with SIGTERM resume
// on the others, through each load balancer, with no gap and no error that
// reaches a client.
func TestGracefulDrain(t *testing.T) {
	for _, lb := range []lbKind{nginx, haproxy} {
		t.Run(string(lb), func(t *testing.T) { testDrain(t, lb) })
	}
}

func testDrain(t *testing.T, lb lbKind) {
	const nClients = 60
	c := startCluster(t, lb)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	topic := "drain-" + string(lb)
	subs := make([]*subscriber, nClients)
	for i := range subs {
		subs[i] = subscribe(ctx, c.LB, []string{topic})
	}
	poll(t, 30*time.Second, "every client's first connection", func() bool {
		for _, s := range subs {
			if s.opens.Load() == 0 {
				return false
			}
		}
		return true
	})

	// Drain the replica with the most streams.
	var target *replica
	most := 0
	poll(t, 10*time.Second, "the replicas to report their streams", func() bool {
		target, most = nil, 0
		sum := 0
		for _, r := range c.Replicas {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			n := r.Connections(ctx)
			cancel()
			sum += n
			if n > most {
				target, most = r, n
			}
		}
		return sum == nClients
	})
	t.Logf("%s serves %d of %d streams", target.Name, most, nClients)

	p := newPublisher(c)
	pubCtx, pubCancel := context.WithCancel(ctx)
	published := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(1, 2))
		for seq := 0; pubCtx.Err() == nil; seq++ {
			if err := p.publish(pubCtx, rng, false, topic, 0, seq, 30*time.Second); err != nil {
				if pubCtx.Err() != nil {
					break
				}
				published <- err
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		published <- nil
	}()
	poll(t, 30*time.Second, "100 events before the drain", func() bool { return p.count.Load() >= 100 })
	code, took := c.Stop(target)
	if code != 0 {
		t.Errorf("%s exited with %d after SIGTERM, want 0", target.Name, code)
	}
	t.Logf("%s drained in %v (drain delay 2s, timeout 10s)", target.Name, took.Round(time.Millisecond))
	if took > 12*time.Second {
		t.Errorf("the drain took %v, beyond its 10s deadline", took)
	}
	n := p.count.Load()
	poll(t, 30*time.Second, "100 events after the drain", func() bool { return p.count.Load() >= n+100 })
	pubCancel()
	if err := <-published; err != nil {
		t.Fatalf("publisher: %v", err)
	}

	logs := waitComplete(t, c, subs, []string{topic}, 60*time.Second)
	stopAll(t, cancel, subs)
	moved := 0
	for _, s := range subs {
		if s.opens.Load() > 1 {
			moved++
		}
	}
	if moved < most {
		t.Errorf("%d clients reconnected, but the drained replica had %d", moved, most)
	}
	verify(t, subs, logs)
	t.Logf("%d events, %d clients moved to the other replicas", len(logs[topic]), moved)
}
