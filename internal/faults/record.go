package faults

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StreamID is a Redis stream entry ID, <ms>-<seq>.
type StreamID struct{ Ms, Seq uint64 }

// Less orders stream IDs as Redis does.
func (a StreamID) Less(b StreamID) bool { return a.Ms < b.Ms || a.Ms == b.Ms && a.Seq < b.Seq }

func (a StreamID) String() string { return fmt.Sprintf("%d-%d", a.Ms, a.Seq) }

// ParseStreamID parses "<ms>-<seq>".
func ParseStreamID(s string) (StreamID, bool) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return StreamID{}, false
	}
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	return StreamID{a, b}, err1 == nil && err2 == nil
}

// SplitID splits a redisbroker position into its epoch and stream ID,
// from the right: the last two '-'-separated fields are the stream ID, the
// epoch is everything before them, treated as opaque (its format may
// change, e.g. to carry a topic tag).
func SplitID(id string) (epoch string, sid StreamID, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return "", StreamID{}, false
	}
	j := strings.LastIndexByte(id[:i], '-')
	if j <= 0 {
		return "", StreamID{}, false
	}
	sid, ok = ParseStreamID(id[j+1:])
	return id[:j], sid, ok
}

// noEpoch is the epoch part of the position of a topic without a stream
// ("0-0-0" today). A position in it is placed before everything.
func isNoEpoch(epoch string) bool { return epoch == "0" }

// Entry is one entry of a topic's log.
type Entry struct {
	ID   string // full position as subscribers see it: <epoch>-<ms>-<seq>
	SID  StreamID
	Data string
}

// Epoch is one epoch of a topic's log: the entries of one stream, from its
// creation until it was lost (if it was).
type Epoch struct {
	Name    string
	Entries []Entry
	// trims records, in time order, each planned trim: entries below Keep
	// are gone from At on.
	trims []trim
	// LostAt is when the harness started destroying the stream (Redis
	// emptied and restarted); zero while it lives.
	LostAt time.Time
}

type trim struct {
	keep int
	at   time.Time
}

// retainedFrom returns the index of the first entry still retained at t.
func (e *Epoch) retainedFrom(t time.Time) int {
	k := 0
	for _, tr := range e.trims {
		if !tr.at.After(t) && tr.keep > k {
			k = tr.keep
		}
	}
	return k
}

func (e *Epoch) lostBy(t time.Time) bool { return !e.LostAt.IsZero() && !e.LostAt.After(t) }

// next returns the index of the first entry after sid.
func (e *Epoch) next(sid StreamID) int {
	return sort.Search(len(e.Entries), func(i int) bool { return sid.Less(e.Entries[i].SID) })
}

// index returns the index of the entry with ID id, or -1.
func (e *Epoch) index(sid StreamID) int {
	i := sort.Search(len(e.Entries), func(i int) bool { return !e.Entries[i].SID.Less(sid) })
	if i < len(e.Entries) && e.Entries[i].SID == sid {
		return i
	}
	return -1
}

// TopicLog is everything a topic's log ever held, over all its epochs.
type TopicLog struct {
	Name   string
	Epochs []*Epoch // in creation order
}

func (l *TopicLog) epoch(name string) *Epoch {
	for _, e := range l.Epochs {
		if e.Name == name {
			return e
		}
	}
	return nil
}

// Current returns the newest epoch, or nil.
func (l *TopicLog) Current() *Epoch {
	if len(l.Epochs) == 0 {
		return nil
	}
	return l.Epochs[len(l.Epochs)-1]
}

// Record is the harness's own copy of every topic's log, read straight
// from Redis (XRANGE), kept across trims and across restarts that lose the
// data: what Redis forgets stays here, marked with when it was lost. It is
// safe for concurrent use.
type Record struct {
	mu        sync.Mutex
	topics    map[string]*TopicLog
	anomalies []Violation
}

// NewRecord returns an empty record.
func NewRecord() *Record { return &Record{topics: map[string]*TopicLog{}} }

// Topic returns the log of topic (created empty if unknown). The caller
// must not use it concurrently with Observe, Trim or Lose.
func (r *Record) Topic(name string) *TopicLog {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.topic(name)
}

func (r *Record) topic(name string) *TopicLog {
	l := r.topics[name]
	if l == nil {
		l = &TopicLog{Name: name}
		r.topics[name] = l
	}
	return l
}

// Last returns the stream ID of the last entry recorded for the topic's
// current epoch and that epoch's name ("" if none), for an incremental
// read.
func (r *Record) Last(topic string) (epoch string, last StreamID, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.topic(topic).Current()
	if e == nil || !e.LostAt.IsZero() {
		return "", StreamID{}, false
	}
	if n := len(e.Entries); n > 0 {
		return e.Name, e.Entries[n-1].SID, true
	}
	return e.Name, StreamID{}, true
}

// Observe merges what a read of the topic's stream returned at time at:
// its epoch ("" if the stream does not exist) and entries (all of them, or
// those after the last recorded one), in stream order. An epoch that
// replaces a live one without Lose, or entries that contradict what was
// recorded, are anomalies (Violations of class "log-anomaly").
func (r *Record) Observe(topic, epoch string, entries []Entry, at time.Time) {
	if epoch == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.topic(topic)
	e := l.epoch(epoch)
	if e == nil {
		if cur := l.Current(); cur != nil && cur.LostAt.IsZero() {
			r.anomalies = append(r.anomalies, Violation{Class: "log-anomaly", Topic: topic,
				Detail: fmt.Sprintf("epoch %q replaced by %q at %s without a planned loss", cur.Name, epoch, at.Format(timeFmt))})
			cur.LostAt = at
		}
		e = &Epoch{Name: epoch}
		l.Epochs = append(l.Epochs, e)
	} else if !e.LostAt.IsZero() {
		r.anomalies = append(r.anomalies, Violation{Class: "log-anomaly", Topic: topic,
			Detail: fmt.Sprintf("epoch %q seen again after it was lost", epoch)})
		return
	}
	for _, en := range entries {
		n := len(e.Entries)
		if n == 0 || e.Entries[n-1].SID.Less(en.SID) {
			e.Entries = append(e.Entries, en)
			continue
		}
		if i := e.index(en.SID); i < 0 || e.Entries[i].Data != en.Data {
			r.anomalies = append(r.anomalies, Violation{Class: "log-anomaly", Topic: topic,
				Detail: fmt.Sprintf("entry %s of epoch %q differs from the recorded log", en.SID, epoch)})
		}
	}
}

// Trim records that entries of the topic's current epoch before index
// keep are about to be removed (the caller then runs XTRIM MINID =
// Entries[keep].SID). It returns the stream ID to trim to and false if
// there is nothing to trim.
func (r *Record) Trim(topic string, keep int, at time.Time) (StreamID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.topic(topic).Current()
	if e == nil || !e.LostAt.IsZero() || keep <= 0 || keep >= len(e.Entries) {
		return StreamID{}, false
	}
	e.trims = append(e.trims, trim{keep: keep, at: at})
	return e.Entries[keep].SID, true
}

// Lose records that the current epoch of every topic is about to be lost
// (Redis emptied). The caller has read the streams to their end first,
// with no publisher running.
func (r *Record) Lose(at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.topics {
		if e := l.Current(); e != nil && e.LostAt.IsZero() {
			e.LostAt = at
		}
	}
}

// Anomalies returns the inconsistencies Observe found.
func (r *Record) Anomalies() []Violation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Violation(nil), r.anomalies...)
}

const timeFmt = "15:04:05.000"
