package hashslot

import "testing"

// TestOf: the values CLUSTER KEYSLOT gives (Redis 7.0), hash tags
// included; the broker's tests check many more against a live node.
func TestOf(t *testing.T) {
	for key, want := range map[string]int{
		"":              0,
		"foo":           12182,
		"{user1000}.a":  3443,
		"user1000":      3443,
		"foo{}{bar}":    8363,
		"foo{{bar}}":    4015,
		"foo{bar}{zap}": 5061,
		"bar":           5061,
	} {
		if got := Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
}
