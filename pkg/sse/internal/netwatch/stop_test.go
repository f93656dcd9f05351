package netwatch

import (
	"sync/atomic"
	"testing"
	"time"
)

// Once stop has returned, gone is not running (issue 9, item 9): a stop
// that races a departing peer waits for the call in progress.
func TestStopWaitsForGone(t *testing.T) {
	for name, w := range watchers() {
		t.Run(name, func(t *testing.T) {
			s, c := pair(t)
			defer s.Close()
			started, release := make(chan struct{}), make(chan struct{})
			var running atomic.Bool
			stop := w.Watch(s, func() {
				running.Store(true)
				close(started)
				<-release
				running.Store(false)
			})
			c.Close()
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("peer close not reported")
			}
			stopped := make(chan bool)
			go func() {
				stop()
				stopped <- running.Load()
			}()
			select {
			case <-stopped:
				t.Fatal("stop returned while gone was still running")
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			if stillRunning := <-stopped; stillRunning {
				t.Fatal("gone was running when stop returned")
			}
		})
	}
}
