package server

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/herald-sse/herald/pkg/sse"
)

// Hostile topic names, event types and data, published through POST
// /publish, never produce an event boundary or a field the publisher did
// not ask for: every accepted publish is exactly one event on the wire,
// with its own type and its data, read both by pkg/sse's Decoder and by a
// strict line reader. Names that cannot be written safely are refused with
// 400 and produce nothing.
func TestInjection(t *testing.T) {
	ls := startServer(t, nil)
	long := strings.Repeat("x", 60<<10)
	cases := []struct {
		topic, event, data string
		ok                 bool
	}{
		{"inj", "", "plain", true},
		{"inj", "", "one\ntwo", true},
		{"inj", "", "cr\rsplit", true},
		{"inj", "", "crlf\r\nsplit", true},
		{"inj", "", "\n\nid: 666\nevent: evil\ndata: injected\n\n", true},
		{"inj", "", "\r\rretry: 1\r\r", true},
		{"inj", "", "trailing newline\n", true},
		{"inj", "", "\n", true},
		{"inj", "", "", true},
		{"inj", "", " leading space", true},
		{"inj", "", ":not a comment", true},
		{"inj", "", "nul\x00inside", true},
		{"inj", "", "bad utf8 \xff\xfe \xc3( \xed\xa0\x80 end", true},
		{"inj", "", "lone cr at end\r", true},
		{"inj", "", long, true},
		{"inj", "", strings.Repeat("line\n", 5000), true},
		{"inj", "data: x", "type that looks like a field", true},
		{"inj", " spaced type ", "type with spaces", true},
		{"inj", "ty\xffpe", "type with invalid utf8", true},
		{"inj", "a\nb", "type with LF", false},
		{"inj", "a\rb", "type with CR", false},
		{"inj", "a\x00b", "type with NUL", false},
		{"inj", "herald.reset", "reserved type", false},
		{"inj", strings.Repeat("t", 300), "type too long", false},
		{"inj\n", "", "topic with LF", false},
		{"inj\r\ndata: x", "", "topic with CRLF", false},
		{"in j", "", "topic with space", false},
		{"inj\x00", "", "topic with NUL", false},
		{"inj\xff", "", "topic with invalid utf8", false},
		{strings.Repeat("t", 257), "", "topic too long", false},
	}

	dec := ls.decoderStream(t, "topic=inj")
	multi := ls.decoderStream(t, "topic=inj&topic=other")
	raw := ls.rawStream(t, "topic=inj")

	var want []sse.Event
	for _, c := range cases {
		status, _, body := ls.do(t, "POST", "/publish", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			url.Values{"topic": {c.topic}, "event": {c.event}, "data": {c.data}}.Encode())
		if c.ok != (status == 200) {
			t.Fatalf("publish %q/%q/%q: %d %s", c.topic, c.event, c.data, status, body)
		}
		if c.ok {
			want = append(want, sse.Event{Type: c.event, Data: c.data})
		}
	}
	ls.publish(t, "inj", "end", "end")
	want = append(want, sse.Event{Type: "end", Data: "end"})

	for name, d := range map[string]*sse.Decoder{"single-topic": dec, "multi-topic": multi} {
		for i, w := range want {
			ev, err := d.Next()
			if err != nil {
				t.Fatalf("%s: event %d: %v", name, i, err)
			}
			if ev.Type != validUTF8(w.Type) || ev.Data != validUTF8(lineBreaks(w.Data)) {
				t.Fatalf("%s: event %d: got type %q data %.80q, want %q %.80q", name, i, ev.Type, ev.Data, w.Type, lineBreaks(w.Data))
			}
		}
	}
	got := raw.events(t, len(want))
	for i, w := range want {
		if got[i].typ != w.Type || got[i].data != lineBreaks(w.Data) {
			t.Fatalf("raw: event %d: got %q %.80q, want %q %.80q", i, got[i].typ, got[i].data, w.Type, lineBreaks(w.Data))
		}
	}
}

// lineBreaks is what a client reads back: CRLF and CR become LF.
func lineBreaks(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

// validUTF8 is a string as a browser decodes it: bad sequences become
// U+FFFD (one per maximal invalid subpart; the cases above use subparts
// where this and the WHATWG rule agree).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			// \xed\xa0\x80 (a surrogate) is three subparts per WHATWG:
			// "\xed" then "\xa0" then "\x80", each one U+FFFD, which is
			// also what decoding byte by byte gives.
			b.WriteString("\uFFFD")
			i++
			continue
		}
		b.WriteString(s[i : i+n])
		i += n
	}
	return b.String()
}

func (ls *liveServer) decoderStream(t *testing.T, query string) *sse.Decoder {
	t.Helper()
	body := ls.openStream(t, query)
	d := sse.NewDecoder(body)
	d.MaxEventSize = 1 << 20
	return d
}

func (ls *liveServer) openStream(t *testing.T, query string) io.ReadCloser {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", ls.URL+"/events?"+query, nil)
	resp, err := ls.client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		cancel()
		resp.Body.Close()
		t.Fatalf("subscribe %s: %d", query, resp.StatusCode)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp.Body
}

type rawReader struct{ r *bufio.Reader }

type rawEvent struct{ id, typ, data string }

func (ls *liveServer) rawStream(t *testing.T, query string) *rawReader {
	return &rawReader{r: bufio.NewReaderSize(ls.openStream(t, query), 1<<16)}
}

// events reads n events, strictly: every line must be a blank line, a
// comment or one of the fields herald writes ("id: ", "event: ", "data: "
// or "data" alone for an empty line), LF-terminated, with no CR anywhere.
// Blocks with only an id (position updates) are skipped.
func (rr *rawReader) events(t *testing.T, n int) []rawEvent {
	t.Helper()
	var out []rawEvent
	var cur rawEvent
	var hasData, hasType bool
	var lines []string
	for len(out) < n {
		line, err := rr.r.ReadString('\n')
		if err != nil {
			t.Fatalf("raw stream ended after %d events: %v", len(out), err)
		}
		line = line[:len(line)-1]
		if strings.ContainsRune(line, '\r') {
			t.Fatalf("CR on the wire: %.80q", line)
		}
		switch {
		case line == "":
			if hasData {
				cur.data = strings.Join(lines, "\n")
				out = append(out, cur)
			} else if hasType {
				t.Fatalf("event field without data")
			}
			cur, hasData, hasType, lines = rawEvent{}, false, false, nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			if hasType {
				t.Fatalf("two event fields in one block")
			}
			cur.typ, hasType = line[7:], true
		case strings.HasPrefix(line, "data: "):
			lines, hasData = append(lines, line[6:]), true
		case line == "data":
			lines, hasData = append(lines, ""), true
		default:
			t.Fatalf("unexpected line on the wire: %.80q", line)
		}
	}
	return out
}
