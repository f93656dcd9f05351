package redisbroker

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// streamID is a Redis stream entry ID, ms-seq.
type streamID struct{ ms, seq uint64 }

func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || a.ms == b.ms && a.seq < b.seq
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// pred returns the largest ID below a (0-0 stays 0-0): reading after it
// starts at a.
func (a streamID) pred() streamID {
	switch {
	case a.seq > 0:
		return streamID{a.ms, a.seq - 1}
	case a.ms > 0:
		return streamID{a.ms - 1, math.MaxUint64}
	}
	return a
}

func parseStreamID(s string) (streamID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, errBadID
	}
	a, err := strconv.ParseUint(ms, 10, 64)
	if err != nil {
		return streamID{}, errBadID
	}
	b, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return streamID{}, errBadID
	}
	return streamID{a, b}, nil
}

type idError struct{}

func (idError) Error() string { return "redisbroker: malformed stream ID" }

var errBadID error = idError{}

// noEpoch is the epoch of a topic that has never been published to (or
// whose history was lost and not yet recreated). Real epochs are base-36
// microsecond timestamps and never "0".
const noEpoch = "0"

// formatID returns the public event ID (and position) for an epoch and a
// stream ID: <epoch>-<ms>-<seq>, characters [0-9a-z-] only.
func formatID(epoch string, id streamID) string {
	return epoch + "-" + id.String()
}

// parseID splits a public ID into epoch and stream ID. ok is false for
// anything that is not exactly <epoch>-<ms>-<seq> with canonical numbers.
func parseID(s string) (epoch string, id streamID, ok bool) {
	epoch, rest, found := strings.Cut(s, "-")
	if !found || !validEpoch(epoch) {
		return "", streamID{}, false
	}
	id, err := parseStreamID(rest)
	if err != nil || id.String() != rest {
		return "", streamID{}, false
	}
	return epoch, id, true
}

// timeOf returns the publish time recorded in a stream ID.
func timeOf(id streamID) time.Time { return time.UnixMilli(int64(id.ms)) }
