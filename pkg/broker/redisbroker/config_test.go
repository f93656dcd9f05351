package redisbroker

import (
	"strings"
	"testing"
)

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"herald", "a", "Mixed_Case9", "_", strings.Repeat("p", 64)} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q): %v", p, err)
		}
	}
	for _, tc := range []struct{ p, err string }{
		{"", "redisbroker: prefix must be 1-64 characters, got 0"},
		{strings.Repeat("p", 65), "redisbroker: prefix must be 1-64 characters, got 65"},
		{"has:colon", `redisbroker: prefix "has:colon": only letters, digits and '_' are allowed`},
		{"a b", `redisbroker: prefix "a b": only letters, digits and '_' are allowed`},
		{"{tag}", `redisbroker: prefix "{tag}": only letters, digits and '_' are allowed`},
		{"é", `redisbroker: prefix "é": only letters, digits and '_' are allowed`},
	} {
		if err := ValidatePrefix(tc.p); err == nil || err.Error() != tc.err {
			t.Errorf("ValidatePrefix(%q): %v, want %s", tc.p, err, tc.err)
		}
	}
}
