package broker

import (
	"fmt"
	"strings"
)

// Limits on names. Topic names are 1-256 bytes of printable ASCII without
// spaces, so they are safe in URLs, Redis keys, logs and metrics labels.
const (
	MaxTopicLen = 256
	MaxTypeLen  = 256
	MaxKeyLen   = 128
)

// ReservedTypePrefix starts event types that herald itself emits (such as
// "herald.reset"); publishers may not use it.
const ReservedTypePrefix = "herald."

// ValidateTopic reports whether name is a valid topic: 1-256 bytes, each a
// printable ASCII character other than space (0x21-0x7E). The error wraps
// ErrInvalidTopic.
func ValidateTopic(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty topic name", ErrInvalidTopic)
	}
	if len(name) > MaxTopicLen {
		return fmt.Errorf("%w: topic name is %d bytes, the limit is %d", ErrInvalidTopic, len(name), MaxTopicLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: topic name has byte 0x%02x at offset %d; allowed are printable ASCII characters without spaces", ErrInvalidTopic, c, i)
		}
	}
	return nil
}

// ValidateMessage checks what every broker requires of a message: an event
// type without CR, LF or NUL, at most MaxTypeLen bytes, not using the
// reserved "herald." prefix, and a valid Key (ValidateKey) if any. Data is
// free-form. The error wraps ErrInvalidMessage.
func ValidateMessage(m Message) error {
	if m.Key != "" {
		if err := ValidateKey(m.Key); err != nil {
			return err
		}
	}
	if len(m.Type) > MaxTypeLen {
		return fmt.Errorf("%w: event type is %d bytes, the limit is %d", ErrInvalidMessage, len(m.Type), MaxTypeLen)
	}
	if strings.ContainsAny(m.Type, "\r\n\x00") {
		return fmt.Errorf("%w: event type must not contain CR, LF or NUL", ErrInvalidMessage)
	}
	if strings.HasPrefix(m.Type, ReservedTypePrefix) {
		return fmt.Errorf("%w: event types starting with %q are reserved", ErrInvalidMessage, ReservedTypePrefix)
	}
	return nil
}

// ValidateKey reports whether k is a valid idempotency key: 1-128 bytes,
// each a printable ASCII character other than space (0x21-0x7E), like a
// UUID or a base64 token. The error wraps ErrInvalidMessage.
func ValidateKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty idempotency key", ErrInvalidMessage)
	}
	if len(k) > MaxKeyLen {
		return fmt.Errorf("%w: idempotency key is %d bytes, the limit is %d", ErrInvalidMessage, len(k), MaxKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: idempotency key has byte 0x%02x at offset %d; allowed are printable ASCII characters without spaces", ErrInvalidMessage, c, i)
		}
	}
	return nil
}

// ValidateTopics validates every topic and rejects an empty list and
// duplicates.
func ValidateTopics(topics []string) error {
	if len(topics) == 0 {
		return fmt.Errorf("%w: no topic", ErrInvalidTopic)
	}
	for i, t := range topics {
		if err := ValidateTopic(t); err != nil {
			return err
		}
		for _, u := range topics[:i] {
			if u == t {
				return fmt.Errorf("%w: topic %q is listed twice", ErrInvalidTopic, t)
			}
		}
	}
	return nil
}

// MaxIDLen is the longest event ID a broker may produce. IDs are 1-128 bytes
// of [0-9A-Za-z_-]: no '.', which separates topics in composite cursors.
const MaxIDLen = 128
