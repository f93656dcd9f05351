package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Golden tests for the encoder rules E1-E8 of sse-conformance.md. Each case
// is also decoded back, so the bytes are shown to mean what they should.
func TestAppendEventGolden(t *testing.T) {
	tests := []struct {
		name string
		rule string
		in   Event
		want string
		back Event // what a spec parser dispatches
	}{
		{"plain", "E1", Event{Data: "hello"}, "data: hello\n\n", Event{Data: "hello"}},
		{"all fields", "E1", Event{ID: "42", Type: "update", Data: "x", Retry: 1500 * time.Millisecond},
			"id: 42\nevent: update\nretry: 1500\ndata: x\n\n", Event{ID: "42", Type: "update", Data: "x", Retry: 1500 * time.Millisecond}},
		{"utf-8 and a leading BOM char in data", "E1", Event{Data: "\uFEFFÖ🦊"}, "data: \uFEFFÖ🦊\n\n", Event{Data: "\uFEFFÖ🦊"}},
		{"LF in data", "E2", Event{Data: "a\nb"}, "data: a\ndata: b\n\n", Event{Data: "a\nb"}},
		{"CR in data", "E2", Event{Data: "a\rb"}, "data: a\ndata: b\n\n", Event{Data: "a\nb"}},
		{"CRLF in data", "E2", Event{Data: "a\r\nb"}, "data: a\ndata: b\n\n", Event{Data: "a\nb"}},
		{"LF CR in data is two breaks", "E2", Event{Data: "a\n\rb"}, "data: a\ndata: \ndata: b\n\n", Event{Data: "a\n\nb"}},
		{"trailing LF in data", "E2", Event{Data: "a\n"}, "data: a\ndata: \n\n", Event{Data: "a\n"}},
		{"only LF", "E2", Event{Data: "\n"}, "data: \ndata: \n\n", Event{Data: "\n"}},
		{"field injection is defused", "E2", Event{Data: "x\n\nid: evil\nevent: evil\ndata: y"},
			"data: x\ndata: \ndata: id: evil\ndata: event: evil\ndata: data: y\n\n", Event{Data: "x\n\nid: evil\nevent: evil\ndata: y"}},
		{"leading space", "E3", Event{Data: " x"}, "data:  x\n\n", Event{Data: " x"}},
		{"leading tab", "E3", Event{Data: "\tx"}, "data: \tx\n\n", Event{Data: "\tx"}},
		{"leading space in id and type", "E3", Event{ID: " 1", Type: " t", Data: "x"}, "id:  1\nevent:  t\ndata: x\n\n", Event{ID: " 1", Type: " t", Data: "x"}},
		{"leading colon", "E3", Event{Data: ":x"}, "data: :x\n\n", Event{Data: ":x"}},
		{"empty data", "E5", Event{}, "data: \n\n", Event{}},
		{"empty data with id", "E5", Event{ID: "7"}, "id: 7\ndata: \n\n", Event{ID: "7"}},
		{"no id field when ID is empty", "E6", Event{Type: "t", Data: "x"}, "event: t\ndata: x\n\n", Event{Type: "t", Data: "x"}},
		{"retry rounds down to ms", "E7", Event{Data: "x", Retry: 2500 * time.Microsecond}, "retry: 2\ndata: x\n\n", Event{Data: "x", Retry: 2 * time.Millisecond}},
		{"retry at least 1 ms", "E7", Event{Data: "x", Retry: time.Nanosecond}, "retry: 1\ndata: x\n\n", Event{Data: "x", Retry: time.Millisecond}},
		{"negative retry omitted", "E7", Event{Data: "x", Retry: -time.Second}, "data: x\n\n", Event{Data: "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.rule+"/"+tc.name, func(t *testing.T) {
			got, err := AppendEvent([]byte("prefix|"), &tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "prefix|"+tc.want {
				t.Fatalf("AppendEvent\n got %q\nwant %q", got, "prefix|"+tc.want)
			}
			var buf bytes.Buffer
			if err := WriteEvent(&buf, &tc.in); err != nil || buf.String() != tc.want {
				t.Fatalf("WriteEvent wrote %q, %v", buf.String(), err)
			}
			if bytes.HasPrefix(got[len("prefix|"):], bom) {
				t.Fatal("output starts with a BOM") // E1
			}
			back := decodeAll(strings.NewReader(tc.want), 0)
			if back.Err != io.EOF || !reflect.DeepEqual(back.Events, []Event{tc.back}) {
				t.Fatalf("decoded back to %+v (%v), want %+v", back.Events, back.Err, tc.back)
			}
		})
	}
}

// E4: IDs and types that would inject fields are refused, and nothing is
// written.
func TestAppendEventRefuses(t *testing.T) {
	tests := []struct {
		name string
		in   Event
		want error
	}{
		{"LF in id", Event{ID: "1\n2", Data: "x"}, ErrInvalidID},
		{"CR in id", Event{ID: "1\r2", Data: "x"}, ErrInvalidID},
		{"CRLF in id", Event{ID: "1\r\n", Data: "x"}, ErrInvalidID},
		{"NUL in id", Event{ID: "1\x002", Data: "x"}, ErrInvalidID},
		{"LF in type", Event{Type: "a\nb", Data: "x"}, ErrInvalidType},
		{"CR in type", Event{Type: "a\r", Data: "x"}, ErrInvalidType},
		{"NUL in type", Event{Type: "\x00", Data: "x"}, ErrInvalidType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := AppendEvent(dst, &tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if string(got) != "keep" {
				t.Fatalf("dst changed to %q", got)
			}
			var buf bytes.Buffer
			if err := WriteEvent(&buf, &tc.in); !errors.Is(err, tc.want) || buf.Len() != 0 {
				t.Fatalf("WriteEvent wrote %q, %v", buf.String(), err)
			}
			if err := tc.in.Validate(); !errors.Is(err, tc.want) {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// E6: an id-only block moves the last event ID without an event; an empty
// or invalid id is refused.
func TestAppendID(t *testing.T) {
	got, err := AppendID(nil, "17")
	if err != nil || string(got) != "id: 17\n\n" {
		t.Fatalf("AppendID = %q, %v", got, err)
	}
	stream := append(append([]byte("id: 1\ndata: a\n\n"), got...), "data: b\n\n"...)
	back := decodeAll(bytes.NewReader(stream), 0)
	want := []Event{{ID: "1", Data: "a"}, {ID: "17", Data: "b"}}
	if !reflect.DeepEqual(back.Events, want) || back.LastID != "17" {
		t.Fatalf("decoded %+v, last id %q", back.Events, back.LastID)
	}
	for _, id := range []string{"", "a\nb", "a\rb", "a\x00b"} {
		if got, err := AppendID([]byte("keep"), id); !errors.Is(err, ErrInvalidID) || string(got) != "keep" {
			t.Errorf("AppendID(%q) = %q, %v; want ErrInvalidID", id, got, err)
		}
	}
}

// E7: retry carries ASCII digits only.
func TestAppendRetry(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{3 * time.Second, "retry: 3000\n\n"},
		{time.Millisecond, "retry: 1\n\n"},
		{0, "retry: 1\n\n"},
		{time.Hour, "retry: 3600000\n\n"},
	} {
		got := AppendRetry(nil, tc.in)
		if string(got) != tc.want {
			t.Errorf("AppendRetry(%v) = %q, want %q", tc.in, got, tc.want)
		}
		back := decodeAll(bytes.NewReader(got), 0)
		if len(back.Events) != 0 || back.Retry != max(tc.in.Truncate(time.Millisecond), time.Millisecond) {
			t.Errorf("AppendRetry(%v) decodes to %v with %d events", tc.in, back.Retry, len(back.Events))
		}
	}
}

// E8: comments are heartbeats the parser never turns into events.
func TestAppendComment(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ":\n\n"},
		{"ping", ": ping\n\n"},
		{"a\nb", ": a\n: b\n\n"},
		{"a\r\nb\rc", ": a\n: b\n: c\n\n"},
		{"a\n\nb", ": a\n:\n: b\n\n"},
		{"\n", ":\n:\n\n"},
		{"data: x\n\ndata: y", ": data: x\n:\n: data: y\n\n"},
	} {
		got := AppendComment([]byte("p"), tc.in)
		if string(got) != "p"+tc.want {
			t.Errorf("AppendComment(%q) = %q, want %q", tc.in, got, "p"+tc.want)
		}
		if back := decodeAll(strings.NewReader(tc.want), 0); len(back.Events) != 0 || back.Err != io.EOF {
			t.Errorf("AppendComment(%q) decodes to %+v", tc.in, back.Events)
		}
	}
}

// E9 is about the IDs herald generates, not the encoder; the encoder's
// share is to pass any valid ID through unchanged, which the fuzz round
// trip covers.

func BenchmarkAppendEvent(b *testing.B) {
	e := Event{ID: "1700000000000-0", Type: "update", Data: `{"user":"ada","status":"online"}`}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendEvent(buf[:0], &e)
	}
}
