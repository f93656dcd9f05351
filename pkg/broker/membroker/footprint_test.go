//go:build !race

// The race detector changes allocation sizes: measure without it.

package membroker

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
)

// TestTopicFootprint measures what a topic costs in memory (run with -v to
// see the figures) and checks a loose bound, so that a change that makes
// idle topics expensive is noticed.
func TestTopicFootprint(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 10,000 topics")
	}
	const topics = 10000
	data := strings.Repeat("d", 16)
	for _, events := range []int{1, 10, 100} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b := New(Config{})
		for i := range topics {
			name := fmt.Sprintf("topic-%05d", i)
			for range events {
				if _, err := b.Publish(t.Context(), name, broker.Message{Type: "t", Data: data}); err != nil {
					t.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perTopic := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / topics
		t.Logf("%3d events of 16 bytes per topic: %6.0f bytes per topic, %4.0f per event", events, perTopic, perTopic/float64(events))
		if limit := 400 + 250*float64(events); perTopic > limit {
			t.Errorf("a topic with %d events costs %.0f bytes, want at most %.0f", events, perTopic, limit)
		}
		runtime.KeepAlive(b)
		b.Close()
	}
}
