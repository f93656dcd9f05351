package broker

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTopic(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"orders/eu-1:prices.v2", true},
		{"!~", true},
		{strings.Repeat("x", MaxTopicLen), true},
		{"", false},
		{strings.Repeat("x", MaxTopicLen+1), false},
		{"has space", false},
		{"tab\t", false},
		{"nl\n", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"é", false},
	} {
		err := ValidateTopic(c.name)
		if (err == nil) != c.ok {
			t.Errorf("ValidateTopic(%.20q) = %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%.20q) = %v, does not wrap ErrInvalidTopic", c.name, err)
		}
	}
}

func TestValidateTopics(t *testing.T) {
	for _, c := range []struct {
		topics []string
		ok     bool
	}{
		{[]string{"a"}, true},
		{[]string{"a", "b", "c"}, true},
		{nil, false},
		{[]string{}, false},
		{[]string{"a", "a"}, false},
		{[]string{"a", "b", "a"}, false},
		{[]string{"a", "bad topic"}, false},
	} {
		err := ValidateTopics(c.topics)
		if (err == nil) != c.ok {
			t.Errorf("ValidateTopics(%q) = %v, want ok=%v", c.topics, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ValidateTopics(%q) = %v, does not wrap ErrInvalidTopic", c.topics, err)
		}
	}
}

func TestValidateMessage(t *testing.T) {
	for _, c := range []struct {
		msg Message
		ok  bool
	}{
		{Message{}, true},
		{Message{Type: "update", Data: "line1\nline2\r\n\x00"}, true},
		{Message{Type: "Herald.reset"}, true}, // the prefix is case-sensitive
		{Message{Type: strings.Repeat("t", MaxTypeLen)}, true},
		{Message{Type: strings.Repeat("t", MaxTypeLen+1)}, false},
		{Message{Type: "herald.reset"}, false},
		{Message{Type: "herald."}, false},
		{Message{Type: "a\nb"}, false},
		{Message{Type: "a\rb"}, false},
		{Message{Type: "a\x00b"}, false},
	} {
		err := ValidateMessage(c.msg)
		if (err == nil) != c.ok {
			t.Errorf("ValidateMessage(%.20q) = %v, want ok=%v", c.msg.Type, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("ValidateMessage(%.20q) = %v, does not wrap ErrInvalidMessage", c.msg.Type, err)
		}
	}
}

func FuzzValidateTopic(f *testing.F) {
	for _, s := range []string{"a", "", "a b", "é", "x\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateTopic(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > MaxTopicLen {
			t.Fatalf("accepted a topic of %d bytes", len(s))
		}
		for i := 0; i < len(s); i++ {
			if s[i] <= ' ' || s[i] >= 0x7f {
				t.Fatalf("accepted byte 0x%02x in %q", s[i], s)
			}
		}
	})
}

func FuzzValidateMessage(f *testing.F) {
	for _, s := range []string{"", "x", "herald.x", "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, typ string) {
		if ValidateMessage(Message{Type: typ}) != nil {
			return
		}
		if strings.ContainsAny(typ, "\r\n\x00") || strings.HasPrefix(typ, ReservedTypePrefix) || len(typ) > MaxTypeLen {
			t.Fatalf("accepted type %q", typ)
		}
	})
}
