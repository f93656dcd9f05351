package e2e

import (
	"testing"

	"github.com/herald-sse/herald/pkg/sse"
)

// TestCompareLog proves the scenarios' check can fail: a gap, a duplicate,
// a reordering, a wrong ID and an extra event are each reported.
func TestCompareLog(t *testing.T) {
	want := []entry{{"e-1-0", "a"}, {"e-2-0", "b"}, {"e-3-0", "c"}}
	ev := func(id, data string) sse.Event { return sse.Event{ID: id, Data: data} }
	exact := []sse.Event{ev("e-1-0", "a"), ev("e-2-0", "b"), ev("e-3-0", "c")}
	if msg := compareLog(exact, want, true); msg != "" {
		t.Fatalf("identical logs reported: %s", msg)
	}
	for name, got := range map[string][]sse.Event{
		"gap":       {ev("e-1-0", "a"), ev("e-3-0", "c")},
		"duplicate": {ev("e-1-0", "a"), ev("e-2-0", "b"), ev("e-2-0", "b"), ev("e-3-0", "c")},
		"reorder":   {ev("e-2-0", "b"), ev("e-1-0", "a"), ev("e-3-0", "c")},
		"wrong id":  {ev("e-1-0", "a"), ev("x-2-0", "b"), ev("e-3-0", "c")},
		"missing":   {ev("e-1-0", "a"), ev("e-2-0", "b")},
		"extra":     {ev("e-1-0", "a"), ev("e-2-0", "b"), ev("e-3-0", "c"), ev("e-4-0", "d")},
	} {
		if msg := compareLog(got, want, true); msg == "" {
			t.Errorf("%s: not reported", name)
		} else {
			t.Logf("%s: %s", name, msg)
		}
	}
}
