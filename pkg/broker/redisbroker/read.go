package redisbroker

import (
	"context"
	"fmt"
	"strconv"
)

// readResult is the decoded answer of <fn>_read.
type readResult struct {
	epoch   string
	last    streamID // last-generated-id
	first   streamID // first entry; valid if length > 0
	length  int64
	added   int64 // entries-added
	entries []entry
}

type entry struct {
	id   streamID
	typ  string
	data string
}

func parseReadResult(v any) (readResult, error) {
	var r readResult
	a, ok := v.([]any)
	if !ok || len(a) < 5 || (len(a)-5)%3 != 0 {
		return r, fmt.Errorf("redisbroker: unexpected read reply %T", v)
	}
	var err error
	r.epoch, _ = a[0].(string)
	if r.epoch == "" || !validEpoch(r.epoch) {
		return r, fmt.Errorf("redisbroker: unexpected epoch %q", a[0])
	}
	s, _ := a[1].(string)
	if r.last, err = parseStreamID(s); err != nil {
		return r, err
	}
	r.length, _ = a[3].(int64)
	r.added, _ = a[4].(int64)
	if r.length > 0 {
		s, _ = a[2].(string)
		if r.first, err = parseStreamID(s); err != nil {
			return r, err
		}
	}
	for i := 5; i+2 < len(a); i += 3 {
		s, _ := a[i].(string)
		id, err := parseStreamID(s)
		if err != nil {
			return r, err
		}
		typ, _ := a[i+1].(string)
		data, _ := a[i+2].(string)
		r.entries = append(r.entries, entry{id: id, typ: typ, data: data})
	}
	return r, nil
}

// read calls <fn>_read, with FCALL rather than FCALL_RO although the
// function writes nothing: a client that routes read-only commands to
// replicas (ClusterOptions.ReadOnly, RouteByLatency, RouteRandomly,
// FailoverOptions.ReplicaOnly) would send FCALL_RO to a replica, whose
// history lags the primary's pub/sub: a replay from it misses the last
// events and the live events after them are then skipped as already
// delivered. FCALL always goes to the primary.
func (b *Broker) read(ctx context.Context, topic string, after streamID, count int) (readResult, error) {
	v, err := b.fcall(ctx, false, b.readFn, b.keys(topic, ""), after.String(), strconv.Itoa(count))
	if err != nil {
		return readResult{}, err
	}
	r, err := parseReadResult(v)
	if err == nil && r.epoch == noEpoch {
		// (Rare since touch: the topic's keys vanished meanwhile.)
		// Positions of a topic without an epoch still carry its tag.
		r.epoch = noEpochOf(topicTag(topic))
	}
	return r, err
}

// touch calls <fn>_touch: the topic's epoch, created if it has none.
func (b *Broker) touch(ctx context.Context, topic string) (string, error) {
	v, err := b.fcall(ctx, false, b.touchFn, b.keys(topic, ""))
	if err != nil {
		return "", err
	}
	e, _ := v.(string)
	if !validEpoch(e) || isNoEpoch(e) {
		return "", fmt.Errorf("redisbroker: unexpected reply to %s: %v", b.touchFn, v)
	}
	return e, nil
}
