package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse"
)

// TestLastEventIDCapFitsCursor: the smallest --max-last-event-id-bytes the
// configuration accepts for --max-topics holds the longest cursor a stream
// of that many topics sends (every topic at an ID of broker.MaxIDLen
// bytes): otherwise a server starts with a cap that answers its own
// clients' reconnects with 400.
func TestLastEventIDCapFitsCursor(t *testing.T) {
	for _, topics := range []int{1, 4, 16, 64} {
		cfg := DefaultConfig()
		cfg.MaxTopics = topics
		least := 0
		for v := 1; v < 1<<16; v++ {
			cfg.MaxLastEventIDBytes = v
			if cfg.Validate() == nil {
				least = v
				break
			}
		}
		if least == 0 {
			t.Fatalf("--max-topics=%d: no --max-last-event-id-bytes accepted", topics)
		}
		cur := broker.Cursor{}
		for i := range topics {
			cur[fmt.Sprintf("topic-%03d", i)] = strings.Repeat("9", broker.MaxIDLen)
		}
		if n := len(sse.FormatCursor(cur)); n > least {
			t.Errorf("--max-topics=%d: --max-last-event-id-bytes=%d is accepted, but the longest cursor of %d topics is %d bytes", topics, least, topics, n)
		}
	}
}
