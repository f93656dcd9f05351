package main

import (
	"strconv"
)

// A bench payload is one line of printable ASCII:
//
//	hb1 <run> <topic> <seq> <sent-ns> ....
//
// run identifies the tool's run (events of an earlier run on the same
// topic are "foreign"), topic is the topic's index, seq the per-topic
// sequence number from 1, sent-ns the send time in nanoseconds since the
// run's start (monotonic clock: publisher and subscribers share the
// process). Dots pad it to the requested size.
const payloadMagic = "hb1 "

// appendPayload appends a payload of at least size bytes.
func appendPayload(dst []byte, run uint32, topic int, seq uint64, sent int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadMagic...)
	dst = strconv.AppendUint(dst, uint64(run), 16)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(topic), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, ' ')
	for len(dst)-start < size {
		dst = append(dst, '.')
	}
	return dst
}

// parsed is a decoded payload.
type parsed struct {
	run   uint32
	topic int
	seq   uint64
	sent  int64
}

// parsePayload decodes a payload without allocating; ok is false for
// anything that is not one.
func parsePayload(b []byte) (p parsed, ok bool) {
	if len(b) < len(payloadMagic) || string(b[:len(payloadMagic)]) != payloadMagic {
		return p, false
	}
	b = b[len(payloadMagic):]
	var fields [4]uint64
	for i := range fields {
		base := uint64(10)
		if i == 0 {
			base = 16
		}
		var v uint64
		n := 0
		for n < len(b) && b[n] != ' ' {
			d, ok := digit(b[n], base)
			if !ok {
				return p, false
			}
			v = v*base + d
			n++
		}
		if n == 0 || n > 19 || n == len(b) {
			return p, false
		}
		fields[i] = v
		b = b[n+1:]
	}
	return parsed{run: uint32(fields[0]), topic: int(fields[1]), seq: fields[2], sent: int64(fields[3])}, true
}

func digit(c byte, base uint64) (uint64, bool) {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0'), true
	case base == 16 && c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10, true
	}
	return 0, false
}
