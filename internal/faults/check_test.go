package faults

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

// The checker and the schedules are plain code: these tests need no Docker.

func TestSplitID(t *testing.T) {
	for _, c := range []struct {
		id, epoch string
		sid       StreamID
		ok        bool
	}{
		{"hoqmdst05u-1796312093334-0", "hoqmdst05u", StreamID{1796312093334, 0}, true},
		{"0-0-0", "0", StreamID{}, true},
		{"ab12_9f3c-17-4", "ab12_9f3c", StreamID{17, 4}, true}, // an epoch with a topic tag
		{"a-b-c-5-6", "a-b-c", StreamID{5, 6}, true},           // the epoch is opaque
		{"5-6", "", StreamID{}, false},
		{"not-a-position", "", StreamID{}, false},
		{"", "", StreamID{}, false},
	} {
		epoch, sid, ok := SplitID(c.id)
		if ok != c.ok || ok && (epoch != c.epoch || sid != c.sid) {
			t.Errorf("SplitID(%q) = %q, %v, %v; want %q, %v, %v", c.id, epoch, sid, ok, c.epoch, c.sid, c.ok)
		}
	}
}

func TestScheduleReproducible(t *testing.T) {
	sh := Shape{Brokers: 3, PubSubBrokers: []int{0, 1}, Topics: 5, Kinds: AllKinds, Budget: 7 * time.Second, LiveBound: time.Second}
	a, b := NewSchedule(42, sh), NewSchedule(42, sh)
	if a.String() != b.String() {
		t.Fatalf("same seed, different schedules:\n%s\n%s", a, b)
	}
	if c := NewSchedule(43, sh); c.String() == a.String() {
		t.Fatalf("seeds 42 and 43 give the same schedule %s", a)
	}
	kinds := map[Kind]bool{}
	for seed := range uint64(200) {
		for _, st := range NewSchedule(seed, sh).Steps {
			kinds[st.Kind] = true
			if st.Kind == PubSubBlackhole && !slices.Contains(sh.PubSubBrokers, st.Broker) {
				t.Fatalf("seed %d: %s on a broker without its own pub/sub proxy", seed, st)
			}
		}
	}
	for _, k := range AllKinds {
		if !kinds[k] {
			t.Errorf("no schedule of 200 seeds has %s", k)
		}
	}
	only, err := ParseKinds("pause, trim")
	if err != nil {
		t.Fatal(err)
	}
	sh.Kinds = only
	for _, st := range NewSchedule(7, sh).Steps {
		if st.Kind != Pause && st.Kind != Trim {
			t.Fatalf("kinds %v: got %s", only, st)
		}
	}
	if _, err := ParseKinds("pause,nope"); err == nil {
		t.Fatal("ParseKinds accepted an unknown kind")
	}
}

// fixture is a record of two topics, a and b, and helpers to build
// sessions against it.
type fixture struct {
	rec *Record
	t0  time.Time
}

func entries(epoch string, ms uint64, n int, tag string) []Entry {
	es := make([]Entry, n)
	for i := range es {
		sid := StreamID{ms + uint64(i), 0}
		es[i] = Entry{ID: epoch + "-" + sid.String(), SID: sid, Data: fmt.Sprintf("%s%d", tag, i)}
	}
	return es
}

func newFixture() *fixture {
	f := &fixture{rec: NewRecord(), t0: time.UnixMilli(1000)}
	f.rec.Observe("a", "ea", entries("ea", 1000, 10, "a"), f.t0)
	f.rec.Observe("b", "eb", entries("eb", 1000, 10, "b"), f.t0)
	return f
}

func (f *fixture) id(topic string, i int) string { return f.rec.Topic(topic).Current().Entries[i].ID }

func (f *fixture) at(ms int) time.Time { return f.t0.Add(time.Duration(ms) * time.Millisecond) }

func ev(topic, id, data string) *broker.Event {
	return &broker.Event{Kind: broker.KindEvent, Topic: topic, ID: id, Data: data}
}

func pos(topic, id string) *broker.Event {
	return &broker.Event{Kind: broker.KindPosition, Topic: topic, ID: id}
}

func reset(topic string, reason broker.ResetReason) *broker.Event {
	return &broker.Event{Kind: broker.KindReset, Topic: topic, Reason: reason}
}

// seq returns position then events from..to-1 of topic's current epoch.
func (f *fixture) seq(topic string, position string, from, to int) []*broker.Event {
	return f.seqIn(topic, f.rec.Topic(topic).Current().Name, position, from, to)
}

// seqIn is seq in the named epoch.
func (f *fixture) seqIn(topic, epoch, position string, from, to int) []*broker.Event {
	out := []*broker.Event{pos(topic, position)}
	for _, e := range f.rec.Topic(topic).epoch(epoch).Entries[from:to] {
		out = append(out, ev(topic, e.ID, e.Data))
	}
	return out
}

func session(topic string, cursor string, origin Origin, at time.Time, evs ...*broker.Event) *Session {
	s := &Session{N: 1, Topics: []string{topic}, Cursor: broker.Cursor{}, Origin: map[string]Origin{topic: origin},
		ForeignFrom: map[string]string{}, Opened: at, Returned: at, Closed: at.Add(time.Second)}
	if cursor != "" {
		s.Cursor[topic] = cursor
	}
	for i, e := range evs {
		s.Items = append(s.Items, Item{Ev: e, At: at.Add(time.Duration(i) * time.Millisecond)})
	}
	return s
}

func classes(r Result) []string {
	var cs []string
	for _, v := range r.Violations {
		cs = append(cs, v.Class)
	}
	return cs
}

func TestCheckSessions(t *testing.T) {
	type tc struct {
		name  string
		setup func(f *fixture) *Session
		want  []string // violation classes
		reset string   // expected "<reason>/<cause>" counted, if any
	}
	cases := []tc{
		{"resume exactly", func(f *fixture) *Session {
			return session("a", f.id("a", 3), FromOwn, f.at(5), f.seq("a", f.id("a", 3), 4, 10)...)
		}, nil, ""},
		{"gap", func(f *fixture) *Session {
			evs := f.seq("a", f.id("a", 3), 4, 10)
			evs = slices.Delete(evs, 2, 3)
			return session("a", f.id("a", 3), FromOwn, f.at(5), evs...)
		}, []string{"gap"}, ""},
		{"duplicate", func(f *fixture) *Session {
			evs := f.seq("a", f.id("a", 3), 4, 10)
			evs = slices.Insert(evs, 3, evs[2])
			return session("a", f.id("a", 3), FromOwn, f.at(5), evs...)
		}, []string{"duplicate"}, ""},
		{"placed at another position", func(f *fixture) *Session {
			return session("a", f.id("a", 3), FromOwn, f.at(5), f.seq("a", f.id("a", 5), 6, 10)...)
		}, []string{"position-not-cursor"}, ""},
		{"foreign cursor placed silently", func(f *fixture) *Session {
			s := session("b", f.id("a", 3), FromForeign, f.at(5), f.seq("b", f.id("b", 3), 4, 10)...)
			s.ForeignFrom["b"] = "a"
			return s
		}, []string{"missing-reset"}, ""},
		{"foreign cursor reset", func(f *fixture) *Session {
			s := session("b", f.id("a", 3), FromForeign, f.at(5), append([]*broker.Event{reset("b", broker.ReasonUnknown)}, f.seq("b", "eb-999-0", 0, 10)...)...)
			s.ForeignFrom["b"] = "a"
			return s
		}, nil, "unknown-cursor/foreign"},
		{"false reset", func(f *fixture) *Session {
			return session("a", f.id("a", 3), FromOwn, f.at(5), append([]*broker.Event{reset("a", broker.ReasonTruncated)}, f.seq("a", "ea-999-0", 0, 10)...)...)
		}, []string{"false-reset"}, ""},
		{"trimmed cursor reset", func(f *fixture) *Session {
			f.rec.Trim("a", 6, f.at(1))
			return session("a", f.id("a", 3), FromStale, f.at(5), append([]*broker.Event{reset("a", broker.ReasonTruncated)}, f.seq("a", f.id("a", 5), 6, 10)...)...)
		}, nil, "truncated/trimmed"},
		{"trimmed cursor silently skips", func(f *fixture) *Session {
			f.rec.Trim("a", 6, f.at(1))
			return session("a", f.id("a", 3), FromStale, f.at(5), f.seq("a", f.id("a", 3), 6, 10)...)
		}, []string{"missing-reset"}, ""},
		{"reset skips retained history", func(f *fixture) *Session {
			f.rec.Trim("a", 6, f.at(1))
			return session("a", f.id("a", 3), FromStale, f.at(5), append([]*broker.Event{reset("a", broker.ReasonTruncated)}, f.seq("a", f.id("a", 7), 8, 10)...)...)
		}, []string{"reset-skips-history"}, ""},
		{"epoch lost mid-stream, reset", func(f *fixture) *Session {
			f.rec.Lose(f.at(10))
			f.rec.Observe("a", "ea2", entries("ea2", 5000, 3, "x"), f.at(20))
			evs := f.seqIn("a", "ea", "ea-1003-0", 4, 10) // epoch ea, entries 4..9
			evs = append(evs, reset("a", broker.ReasonEpoch))
			evs = append(evs, f.seq("a", "ea2-4999-0", 0, 3)...)
			s := session("a", "ea-1003-0", FromOwn, f.at(5), evs...)
			s.Items[len(s.Items)-5].At = f.at(30) // the reset arrives after the loss
			return s
		}, nil, "epoch/epoch-lost"},
		{"epoch lost, events continue silently", func(f *fixture) *Session {
			f.rec.Lose(f.at(10))
			f.rec.Observe("a", "ea2", entries("ea2", 5000, 3, "x"), f.at(20))
			evs := f.seqIn("a", "ea", "ea-1003-0", 4, 10)
			for _, e := range f.rec.Topic("a").Current().Entries {
				evs = append(evs, ev("a", e.ID, e.Data))
			}
			return session("a", "ea-1003-0", FromOwn, f.at(5), evs...)
		}, []string{"silent-epoch-switch"}, ""},
		{"unknown event", func(f *fixture) *Session {
			evs := append(f.seq("a", f.id("a", 3), 4, 10), ev("a", "ea-99999-0", "?"))
			return session("a", f.id("a", 3), FromOwn, f.at(5), evs...)
		}, []string{"unknown-event"}, ""},
		{"final session incomplete", func(f *fixture) *Session {
			s := session("a", f.id("a", 3), FromOwn, f.at(5), f.seq("a", f.id("a", 3), 4, 8)...)
			s.Final, s.Closed = true, time.Time{}
			return s
		}, []string{"incomplete"}, ""},
		{"live start misses an event", func(f *fixture) *Session {
			// Subscribe returned at ms 1005; entries 8 and 9 were published
			// after it (beyond the slack of 2 ms).
			return session("a", "", FromNone, f.at(5), f.seq("a", f.id("a", 9), 10, 10)...)
		}, []string{"live-start-misses"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture()
			s := c.setup(f)
			r := Check(&Run{Record: f.rec, Sessions: []*Session{s}, FinalWant: map[string]string{"a": "ea-1009-0"}})
			if got := classes(r); !slices.Equal(got, c.want) {
				t.Fatalf("violations %q, want %q:\n%v", got, c.want, r.Violations)
			}
			if c.reset != "" && r.Resets[c.reset] != 1 {
				t.Fatalf("resets %v, want one %s", r.Resets, c.reset)
			}
		})
	}
}

func TestCheckLiveness(t *testing.T) {
	f := newFixture()
	// A session open from ms 0 to 20000 took its position at ms 0 and the
	// events: entry i (published at ms 1000+i) at ms 1000+i*1000.
	s := session("a", "ea-999-0", FromOwn, f.t0.Add(-time.Second))
	s.Closed = f.at(20000)
	s.Items = append(s.Items, Item{Ev: pos("a", "ea-999-0"), At: f.t0.Add(-time.Second)})
	for i, e := range f.rec.Topic("a").Current().Entries {
		s.Items = append(s.Items, Item{Ev: ev("a", e.ID, e.Data), At: f.at(i * 1000)})
	}
	run := func(w Window) []string {
		return classes(Check(&Run{Record: f.rec, Sessions: []*Session{s}, Live: []Window{w}, LiveBound: 4500 * time.Millisecond}))
	}
	if got := run(Window{Broker: 0, Start: f.t0, End: f.at(10000)}); !slices.Equal(got, []string{"deaf"}) {
		t.Fatalf("entry 5 arrived 5 s late: violations %q, want deaf", got)
	}
	if got := run(Window{Broker: 1, Start: f.t0, End: f.at(10000)}); got != nil {
		t.Fatalf("a window of another broker: violations %q", got)
	}
	if got := run(Window{Broker: -1, Start: f.t0, End: f.at(4000)}); got != nil {
		t.Fatalf("entries of the window's first 4 s arrived in time: violations %q", got)
	}
}

func TestCheckPublishes(t *testing.T) {
	f := newFixture()
	f.rec.Observe("a", "ea", []Entry{{ID: "ea-2000-0", SID: StreamID{2000, 0}, Data: "a0"}}, f.at(1)) // a0 twice
	closing := Window{Broker: 2, Start: f.at(100), End: f.at(200)}
	pubs := []Publish{
		{Topic: "a", Data: "a1", Via: 0, ID: f.id("a", 1)},
		{Topic: "a", Data: "a2", Via: -1, ID: f.id("a", 3)},             // acknowledged under another ID
		{Topic: "a", Data: "lost", Via: 1, ID: "ea-5000-0"},             // acknowledged, not in the log
		{Topic: "a", Data: "a0", Via: 1, ID: f.id("a", 0)},              // in the log twice
		{Topic: "b", Data: "never", Via: 0, Err: broker.ErrUnavailable}, // failed, not in the log: fine
		{Topic: "b", Data: "x", Via: 2, Err: broker.ErrClosed, Start: f.at(150), End: f.at(150)},
		{Topic: "b", Data: "y", Via: 2, Err: errors.New("broker: unavailable: redis: use of closed network connection"), Start: f.at(90), End: f.at(120)},
	}
	r := Check(&Run{Record: f.rec, Publishes: pubs, Closes: []Window{closing}})
	want := []string{"ack-mismatch", "lost-ack", "dup-publish", "close-error"}
	if got := classes(r); !slices.Equal(got, want) {
		t.Fatalf("violations %q, want %q:\n%v", got, want, r.Violations)
	}
	if r.Published != 7 || r.Acked != 4 {
		t.Fatalf("published %d acked %d, want 7 and 4", r.Published, r.Acked)
	}
}

func TestRecordAnomalies(t *testing.T) {
	f := newFixture()
	f.rec.Observe("a", "ea", []Entry{{ID: "ea-1002-0", SID: StreamID{1002, 0}, Data: "changed"}}, f.at(1))
	f.rec.Observe("b", "eb2", entries("eb2", 3000, 1, "n"), f.at(2)) // a new epoch nobody caused
	r := Check(&Run{Record: f.rec})
	if got := classes(r); !slices.Equal(got, []string{"log-anomaly", "log-anomaly"}) {
		t.Fatalf("violations %q, want two log anomalies: %v", got, r.Violations)
	}
}
