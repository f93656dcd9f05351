package sse

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
)

// topicLog is what a stream delivered for one topic.
type topicLog struct {
	resets []broker.ResetReason // reasons, in order
	data   []string
}

// readTopics reads er until it has seen the marker event "<topic>:end" of
// every topic in topics (the caller publishes them after opening the
// stream, so everything the stream owes before them has arrived), and sorts
// what it got by topic: reset events by their JSON topic, events by their
// data prefix "<topic>:". It returns the last id seen.
func readTopics(t *testing.T, er *eventReader, topics ...string) (map[string]*topicLog, string) {
	t.Helper()
	out := map[string]*topicLog{}
	get := func(tp string) *topicLog {
		if out[tp] == nil {
			out[tp] = &topicLog{}
		}
		return out[tp]
	}
	pending := map[string]bool{}
	for _, tp := range topics {
		pending[tp] = true
	}
	last := ""
	for len(pending) > 0 {
		ev := er.next(wait)
		if ev.ID != "" {
			last = ev.ID
		}
		if ev.Type == ResetEventType {
			var r struct{ Topic, Reason string }
			if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
				t.Fatalf("reset data %q: %v", ev.Data, err)
			}
			get(r.Topic).resets = append(get(r.Topic).resets, broker.ResetReason(r.Reason))
			continue
		}
		tp, rest, _ := strings.Cut(ev.Data, ":")
		if rest == "end" {
			delete(pending, tp)
			continue
		}
		get(tp).data = append(get(tp).data, ev.Data)
	}
	return out, last
}

func seqData(topic string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = fmt.Sprintf("%s:%d", topic, i)
	}
	return s
}

// A cursor is never placed on a topic it was not taken from: the stored
// lastEventId of an app whose user changed subscriptions. Topics the cursor
// covers resume exactly; the others get a reset and their retained history.
// (Reproduces issue 9, item 1: c0..c3 were skipped without a reset.)
func TestCursorNeverPlacedOnAnotherTopic(t *testing.T) {
	eachMode(t, func(t *testing.T, m mode) {
		env := newTopicEnv(t, m, membroker.Config{})
		for _, tp := range []struct {
			name string
			n    int
		}{{"a", 7}, {"b", 4}, {"c", 5}} {
			for _, d := range seqData(tp.name, tp.n) {
				env.publish(tp.name, "", d)
			}
		}
		end := func(topics ...string) {
			for _, tp := range topics {
				env.publish(tp, "", tp+":end")
			}
		}
		// The cursor of an a&b stream after its first live events, and the
		// id of a one-topic stream of b.
		_, er := env.open("topic=a&topic=b", "")
		end("a", "b")
		readTopics(t, er, "a", "b")
		_, erB := env.open("topic=b", "")
		end("a", "b")
		_, abCursor := readTopics(t, er, "a", "b")
		readTopics(t, erB, "b")
		bID := env.publish("b", "", "b:end")
		if _, last := readTopics(t, erB, "b"); last != bID {
			t.Fatalf("one-topic stream: last id %q, want the publish id %q", last, bID)
		}
		bCursor := bID

		cData := seqData("c", 5)
		cases := []struct {
			name, query, cursor string
			want                map[string][]string // per topic: data expected
			reset               map[string]bool     // topics that must get a reset
		}{
			{"composite a&b on a&c", "topic=a&topic=c", abCursor,
				map[string][]string{"c": cData}, map[string]bool{"c": true}},
			{"composite a&b on b&c (other index)", "topic=b&topic=c", abCursor,
				map[string][]string{"c": cData}, map[string]bool{"c": true}},
			{"composite a&b on a", "topic=a", abCursor, nil, nil},
			{"composite a&b on a&b&c", "topic=a&topic=b&topic=c", abCursor,
				map[string][]string{"c": cData}, map[string]bool{"c": true}},
			{"one-topic id of b on c", "topic=c", bCursor,
				map[string][]string{"c": cData}, map[string]bool{"c": true}},
			{"one-topic id of b on b&c", "topic=b&topic=c", bCursor,
				map[string][]string{"c": cData}, map[string]bool{"c": true}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, er := env.open(tc.query, tc.cursor)
				var topics []string
				for _, kv := range strings.Split(tc.query, "&") {
					topics = append(topics, strings.TrimPrefix(kv, "topic="))
				}
				end(topics...)
				got, _ := readTopics(t, er, topics...)
				for _, tp := range []string{"a", "b", "c"} {
					g := got[tp]
					if g == nil {
						g = &topicLog{}
					}
					wantReset := tc.reset[tp]
					if wantReset && (len(g.resets) != 1 || g.resets[0] != broker.ReasonUnknown) {
						t.Errorf("topic %s: resets %q, want one %q", tp, g.resets, broker.ReasonUnknown)
					}
					if !wantReset && len(g.resets) != 0 {
						t.Errorf("topic %s: resets %q, want none (the cursor covers it)", tp, g.resets)
					}
					if fmt.Sprint(g.data) != fmt.Sprint(tc.want[tp]) {
						t.Errorf("topic %s: got %q, want %q", tp, g.data, tc.want[tp])
					}
				}
			})
		}
	})
}

func TestParseCursor(t *testing.T) {
	ab := FormatCursor(broker.Cursor{"a": "pa", "b": "pb"})
	abc := FormatCursor(broker.Cursor{"a": "pa", "b": "pb", "c": "pc"})
	if want := "h2." + topicTag("a") + ":pa." + topicTag("b") + ":pb"; ab != want {
		t.Fatalf("FormatCursor = %q, want %q", ab, want)
	}
	u := unknownPosition
	for _, tc := range []struct {
		name   string
		topics []string
		id     string
		want   broker.Cursor
	}{
		{"empty: live", []string{"a"}, "", nil},
		{"one-topic id on one topic", []string{"a"}, "pa", broker.Cursor{"a": "pa"}},
		{"one-topic id on two topics: the broker tells whose", []string{"a", "b"}, "pa", broker.Cursor{"a": "pa", "b": "pa"}},
		{"h2 on its own topics", []string{"a", "b"}, ab, broker.Cursor{"a": "pa", "b": "pb"}},
		{"h2 on a subset", []string{"b"}, abc, broker.Cursor{"b": "pb"}},
		{"h2 on a superset", []string{"a", "b", "c"}, ab, broker.Cursor{"a": "pa", "b": "pb", "c": u}},
		{"h2 on disjoint topics", []string{"c", "d"}, ab, broker.Cursor{"c": u, "d": u}},
		{"h2 entries in another order", []string{"a", "b"}, "h2." + topicTag("b") + ":pb." + topicTag("a") + ":pa", broker.Cursor{"a": "pa", "b": "pb"}},
		{"h2 with a tag twice", []string{"a", "b"}, ab + "." + topicTag("a") + ":px", broker.Cursor{"a": u, "b": "pb"}},
		{"h2 malformed entries", []string{"a", "b"}, "h2." + topicTag("a") + ":.zz:pb." + topicTag("b") + "pb.", broker.Cursor{"a": u, "b": u}},
		{"h2 empty", []string{"a"}, "h2.", broker.Cursor{"a": u}},
		{"h1 of the same size: by index", []string{"a", "c"}, "h1.pa.pb", broker.Cursor{"a": "pa", "c": "pb"}},
		{"h1 of another size", []string{"a", "b", "c"}, "h1.pa.pb", broker.Cursor{"a": u, "b": u, "c": u}},
		{"h1 with an empty place", []string{"a", "b"}, "h1.pa.", broker.Cursor{"a": "pa", "b": u}},
		{"another version", []string{"a"}, "h3.x.y", broker.Cursor{"a": u}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseCursor(tc.topics, tc.id)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("parseCursor(%v, %q) = %v, want %v", tc.topics, tc.id, got, tc.want)
			}
		})
	}
}

// Two topics of one stream whose tags collide still round-trip: entries of
// one tag pair with topics in sorted order.
func TestCursorTagCollision(t *testing.T) {
	// Find two short names with the same tag (32-bit: a few 100k tries).
	seen := map[string]string{}
	var x, y string
	for i := 0; y == ""; i++ {
		n := fmt.Sprintf("t%d", i)
		tag := topicTag(n)
		if o, ok := seen[tag]; ok {
			x, y = o, n
		}
		seen[tag] = n
	}
	topics := canonicalTopics([]string{x, y, "z"})
	c := broker.Cursor{x: "px", y: "py", "z": "pz"}
	if got := parseCursor(topics, FormatCursor(c)); fmt.Sprint(got) != fmt.Sprint(c) {
		t.Fatalf("colliding tags %s/%s: %v, want %v", x, y, got, c)
	}
	// A cursor that has only one of them places neither: the count differs.
	got := parseCursor(topics, FormatCursor(broker.Cursor{x: "px", "z": "pz"}))
	if got[x] != unknownPosition || got[y] != unknownPosition || got["z"] != "pz" {
		t.Fatalf("one of two colliding topics: %v", got)
	}
}
