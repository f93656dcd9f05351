package redisbroker

import (
	"crypto/sha1"
	"encoding/hex"
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
// whose history was lost and not yet recreated), as <fn>_read reports it.
// Positions of such a topic carry the topic's tag all the same
// (noEpochOf): "0_<tag>-0-0". Real epochs are "<base-36 microseconds>_<tag>"
// (or, created by release 1, the base-36 microseconds alone) and never
// start with "0".
const noEpoch = "0"

// isNoEpoch reports whether e is the epoch of a topic without one.
func isNoEpoch(e string) bool { return e == noEpoch || strings.HasPrefix(e, noEpoch+"_") }

// noEpochOf returns the no-epoch epoch of the topic with tag tag.
func noEpochOf(tag string) string { return noEpoch + "_" + tag }

// tagLen is the length of a topic tag (topicTag).
const tagLen = 8

// topicTag returns the tag every epoch of a topic carries: 8 hex digits of
// the SHA-1 of its name, as the function library computes it
// (redis.sha1hex). A position handed to another topic is recognised by it
// (broker.ReasonUnknown) instead of being placed on the wrong log, even
// when the two topics were created in the same microsecond.
func topicTag(topic string) string {
	sum := sha1.Sum([]byte(topic))
	return hex.EncodeToString(sum[:tagLen/2])
}

// epochTag returns the topic tag of an epoch, "" for an epoch of release 1
// (no tag: its topic cannot be told).
func epochTag(e string) string {
	if i := strings.IndexByte(e, '_'); i >= 0 {
		return e[i+1:]
	}
	return ""
}

// formatID returns the public event ID (and position) for an epoch and a
// stream ID: <epoch>-<ms>-<seq>, characters [0-9a-z_-] only.
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

// validEpoch reports whether e is an epoch: base-36 digits, then "_" and an
// 8-hex-digit topic tag (release 1 wrote no tag).
func validEpoch(e string) bool {
	base, tag, tagged := strings.Cut(e, "_")
	if base == "" || len(base) > 20 || tagged && len(tag) != tagLen {
		return false
	}
	for i := 0; i < len(base); i++ {
		if c := base[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
