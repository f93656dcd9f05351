package sse

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

// decoded is everything a decode of a whole stream produces.
type decoded struct {
	Events []Event
	LastID string
	Retry  time.Duration
	Err    error
}

// decodeAll runs a decoder over r until it fails.
func decodeAll(r io.Reader, maxEvent int) decoded {
	d := NewDecoder(r)
	d.MaxEventSize = maxEvent
	var out decoded
	for {
		ev, err := d.Next()
		if err != nil {
			out.Err = err
			break
		}
		out.Events = append(out.Events, ev)
	}
	out.LastID, out.Retry = d.LastEventID(), d.Retry()
	return out
}

// chunkReader returns its input in reads of at most n bytes.
type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.n, len(r.b))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// splitReader returns its input in reads that end right after each CR and
// in the middle of each multi-byte UTF-8 sequence, so CRLF pairs and runes
// straddle reads.
type splitReader struct{ b []byte }

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b))
	for i := 0; i < n; i++ {
		if r.b[i] == '\r' {
			n = i + 1
			break
		}
		if r.b[i] >= 0xC0 && i+1 < n {
			n = i + 1
			break
		}
	}
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// feeders are the ways the decode tests cut their input into reads.
var feeders = []struct {
	name string
	fn   func(string) io.Reader
}{
	{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
	{"1byte", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
	{"2byte", func(s string) io.Reader { return &chunkReader{[]byte(s), 2} }},
	{"3byte", func(s string) io.Reader { return &chunkReader{[]byte(s), 3} }},
	{"half", func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) }},
	{"crsplit", func(s string) io.Reader { return &splitReader{[]byte(s)} }},
	{"dataerr", func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) }},
}

// ev builds an expected event.
func ev(id, typ, data string) Event { return Event{ID: id, Type: typ, Data: data} }

// Table tests for the client-side rules C1-C4 of sse-conformance.md (and
// the web-platform-tests they name), each fed whole and in small pieces.
func TestDecoderConformance(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   []Event
		lastID string
		retry  time.Duration
	}{
		// C1: line endings, BOM, UTF-8.
		{name: "LF", in: "data: a\n\n", want: []Event{ev("", "", "a")}},
		{name: "CRLF", in: "data: a\r\n\r\n", want: []Event{ev("", "", "a")}},
		{name: "CR", in: "data: a\r\r", want: []Event{ev("", "", "a")}},
		{name: "mixed endings", in: "data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r\n",
			want: []Event{ev("", "", "a\nb\nc"), ev("", "", "d")}},
		{name: "CR then LF is one line end", in: "data: a\r\ndata: b\r\n\r\n", want: []Event{ev("", "", "a\nb")}},
		{name: "LF CR is two line ends", in: "data: a\n\rdata: b\n\n", want: []Event{ev("", "", "a"), ev("", "", "b")}},
		{name: "CR CR LF", in: "data: a\r\r\ndata: b\n\n", want: []Event{ev("", "", "a"), ev("", "", "b")}},
		{name: "format-bom", in: "\uFEFFdata: 1\n\n", want: []Event{ev("", "", "1")}},
		{name: "format-bom-2", in: "\uFEFF\uFEFFdata: 1\n\ndata: 2\n\ndata: 3\n\n",
			want: []Event{ev("", "", "2"), ev("", "", "3")}},
		{name: "BOM only at start", in: "data: 1\n\n\uFEFFdata: 2\n\ndata: 3\n\n",
			want: []Event{ev("", "", "1"), ev("", "", "3")}},
		{name: "partial BOM is data", in: "\xEF\xBBdata: 1\n\ndata: 2\n\n", want: []Event{ev("", "", "2")}},
		{name: "format-utf-8", in: "data: ok…\n\ndata: Ölçü 🦊 中文\n\n",
			want: []Event{ev("", "", "ok…"), ev("", "", "Ölçü 🦊 中文")}},
		{name: "invalid UTF-8 becomes U+FFFD", in: "data: a\xffb\xe2\x82c\xed\xa0\x80d\xf4\x90\n\n",
			want: []Event{ev("", "", "a\uFFFDb\uFFFDc\uFFFD\uFFFD\uFFFDd\uFFFD\uFFFD")}},
		{name: "truncated rune at line end", in: "data: \xe2\x82\ndata: x\n\n", want: []Event{ev("", "", "\uFFFD\nx")}},
		{name: "invalid UTF-8 in type and id", in: "id: \xff\nevent: \xc3\ndata\n\n", want: []Event{ev("\uFFFD", "\uFFFD", "")},
			lastID: "\uFFFD"},

		// C2: fields.
		{name: "format-field-parsing", in: "data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n",
			want: []Event{ev("", "", "\x00\n 2\n1\n3\n\n4")}},
		{name: "format-field-unknown", in: "data: 1\nfoo: bar\nDATA: x\nEvent: y\n\n", want: []Event{ev("", "", "1")}},
		{name: "no colon is empty value", in: "data\n\n", want: []Event{ev("", "", "")}},
		{name: "empty data lines", in: "data\ndata\n\n", want: []Event{ev("", "", "\n")}},
		{name: "data colon no space", in: "data:x\n\n", want: []Event{ev("", "", "x")}},
		{name: "one space stripped", in: "data:  x\n\ndata:\tx\n\n", want: []Event{ev("", "", " x"), ev("", "", "\tx")}},
		{name: "trailing spaces kept", in: "data: x  \n\n", want: []Event{ev("", "", "x  ")}},
		{name: "colon in value", in: "data: a: b:c\n\n", want: []Event{ev("", "", "a: b:c")}},
		{name: "comments", in: ": hi\n:\n: data: x\n\ndata: y\n: mid\n\n", want: []Event{ev("", "", "y")}},
		{name: "event type", in: "event: foo\ndata: x\n\n", want: []Event{ev("", "foo", "x")}},
		{name: "last event field wins", in: "event: a\nevent: b\ndata: x\n\n", want: []Event{ev("", "b", "x")}},
		{name: "empty event field", in: "event: a\nevent\ndata: x\n\n", want: []Event{ev("", "", "x")}},
		{name: "type reset after undispatched block", in: "event: foo\n\ndata: x\n\n", want: []Event{ev("", "", "x")}},
		{name: "type reset after dispatch", in: "event: foo\ndata: x\n\ndata: y\n\n", want: []Event{ev("", "foo", "x"), ev("", "", "y")}},
		{name: "explicit message type", in: "event: message\ndata: x\n\n", want: []Event{ev("", "message", "x")}},
		{name: "leading space in name", in: " data: x\n\n", want: nil},
		{name: "blank lines only", in: "\n\n\r\n\r\r", want: nil},

		// C3: the last event ID.
		{name: "format-field-id", in: "id: 1\ndata: a\n\ndata: b\n\n", want: []Event{ev("1", "", "a"), ev("1", "", "b")}, lastID: "1"},
		{name: "format-field-id-2", in: "id: 1\ndata: a\n\nid\ndata: b\n\ndata: c\n\n",
			want: []Event{ev("1", "", "a"), ev("", "", "b"), ev("", "", "c")}},
		{name: "format-field-id-3 (id after data)", in: "data: a\nid: 7\n\n", want: []Event{ev("7", "", "a")}, lastID: "7"},
		{name: "format-field-id-null", in: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", want: []Event{ev("1", "", "a"), ev("1", "", "b")}, lastID: "1"},
		{name: "id-only block", in: "id: 1\ndata: a\n\nid: 2\n\n", want: []Event{ev("1", "", "a")}, lastID: "2"},
		{name: "id-only block then event", in: "id: 2\n\ndata: a\n\n", want: []Event{ev("2", "", "a")}, lastID: "2"},
		{name: "empty id resets", in: "id: 1\n\nid:\n\n", want: nil, lastID: ""},
		{name: "id with space kept", in: "id:  x \ndata\n\n", want: []Event{ev(" x ", "", "")}, lastID: " x "},
		{name: "unfinished event discarded", in: "data: a\n\nid: 9\ndata: b\n", want: []Event{ev("", "", "a")}, lastID: ""},
		{name: "unfinished line discarded", in: "data: a\n\ndata: b", want: []Event{ev("", "", "a")}},
		{name: "unfinished id-only block discarded", in: "id: 1\n\nid: 2\n", lastID: "1"},
		{name: "event-data", in: "data: x\n\ndata\n\ndata:\n\n", want: []Event{ev("", "", "x"), ev("", "", ""), ev("", "", "")}},

		// C4: retry.
		{name: "format-field-retry", in: "retry: 1500\ndata: x\n\n", want: []Event{{Data: "x", Retry: 1500 * time.Millisecond}}, retry: 1500 * time.Millisecond},
		{name: "retry-only block", in: "retry: 10\n\ndata: x\n\n", want: []Event{ev("", "", "x")}, retry: 10 * time.Millisecond},
		{name: "retry in unfinished event applies", in: "retry: 10\ndata: x\n", retry: 10 * time.Millisecond},
		{name: "format-field-retry-bogus", in: "retry: 10\n\nretry: 1x\nretry: -1\nretry: 1.5\nretry:  5\nretry: 5 \nretry: ٣\n\n", retry: 10 * time.Millisecond},
		{name: "format-field-retry-empty", in: "retry: 10\n\nretry\n\nretry:\n\nretry: \n\n", retry: 10 * time.Millisecond},
		{name: "retry zero", in: "retry: 10\n\nretry: 0\n\n", retry: 0},
		{name: "retry leading zeros", in: "retry: 007\n\n", retry: 7 * time.Millisecond},
		{name: "retry huge saturates", in: "retry: 99999999999999999999999999\n\n", retry: time.Duration(math.MaxInt64)},
	}
	for _, tc := range tests {
		for _, f := range feeders {
			t.Run(tc.name+"/"+f.name, func(t *testing.T) {
				got := decodeAll(f.fn(tc.in), 0)
				if got.Err != io.EOF {
					t.Fatalf("error %v, want io.EOF", got.Err)
				}
				if !reflect.DeepEqual(got.Events, tc.want) {
					t.Errorf("events\n got %q\nwant %q", got.Events, tc.want)
				}
				if got.LastID != tc.lastID {
					t.Errorf("LastEventID() = %q, want %q", got.LastID, tc.lastID)
				}
				if got.Retry != tc.retry {
					t.Errorf("Retry() = %v, want %v", got.Retry, tc.retry)
				}
			})
		}
	}
}

// The decoder agrees with a direct transcription of the spec on inputs
// made of the tricky pieces, at every split point.
func TestDecoderMatchesReference(t *testing.T) {
	pieces := []string{"data", "id", "event", "retry", ":", " ", "\r", "\n", "\r\n", "x", "5", "\x00", "\uFEFF", "\xe2\x82", "é", "\xff"}
	// A small deterministic generator, so that failures reproduce.
	seed := uint32(1)
	next := func() uint32 { seed ^= seed << 13; seed ^= seed >> 17; seed ^= seed << 5; return seed }
	for i := 0; i < 3000; i++ {
		var b strings.Builder
		for n := int(next() % 24); n > 0; n-- {
			b.WriteString(pieces[next()%uint32(len(pieces))])
		}
		in := b.String()
		want := referenceDecode([]byte(in))
		for _, f := range feeders {
			got := decodeAll(f.fn(in), 0)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %q:\n got %+v\nwant %+v", f.name, in, got, want)
			}
		}
	}
}

// C6: bounded event and line size.
func TestDecoderLimits(t *testing.T) {
	const max = 64
	big := strings.Repeat("x", max)
	tests := []struct {
		name    string
		in      string
		want    []Event
		wantErr error
	}{
		{"data at limit", "data: " + big + "\n\n", []Event{ev("", "", big)}, io.EOF},
		{"data over limit", "data: " + big + "x\n\n", nil, ErrEventTooLarge},
		{"joined data at limit", "data: " + big[:max/2] + "\ndata: " + big[:max/2-1] + "\n\n", []Event{ev("", "", big[:max/2]+"\n"+big[:max/2-1])}, io.EOF},
		{"joined data over limit", "data: " + big[:max/2] + "\ndata: " + big[:max/2] + "\n\n", nil, ErrEventTooLarge},
		{"many empty data lines", strings.Repeat("data\n", max+2) + "\n", nil, ErrEventTooLarge},
		{"events before the big one", "data: a\n\ndata: " + big + big + "\n\n", []Event{ev("", "", "a")}, ErrEventTooLarge},
		{"unterminated long line", "data: a\n\nid: " + big + big + big, []Event{ev("", "", "a")}, ErrEventTooLarge},
		{"long id line", "id: " + big + big + "\ndata: a\n\n", nil, ErrEventTooLarge},
		{"long comment skipped", ":" + strings.Repeat(big, 100) + "\ndata: a\n\n: " + strings.Repeat(big, 3) + "\r\ndata: b\n\n", []Event{ev("", "", "a"), ev("", "", "b")}, io.EOF},
		{"long comment ended by CR", ":" + strings.Repeat(big, 5) + "\r\ndata: a\n\n", []Event{ev("", "", "a")}, io.EOF},
	}
	for _, tc := range tests {
		for _, f := range feeders {
			t.Run(tc.name+"/"+f.name, func(t *testing.T) {
				d := NewDecoder(f.fn(tc.in))
				d.MaxEventSize = max
				var got []Event
				var err error
				for {
					var e Event
					if e, err = d.Next(); err != nil {
						break
					}
					got = append(got, e)
					checkBounded(t, d)
				}
				checkBounded(t, d)
				if err != tc.wantErr {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("events %q, want %q", got, tc.want)
				}
				if err == ErrEventTooLarge {
					if _, err2 := d.Next(); err2 != ErrEventTooLarge {
						t.Errorf("after ErrEventTooLarge, Next returned %v", err2)
					}
				}
			})
		}
	}
}

// checkBounded fails if the decoder holds more memory than its limit allows.
func checkBounded(t testing.TB, d *Decoder) {
	t.Helper()
	m := d.maxEvent()
	if cap(d.buf) > max(initialBufSize, m+lineSlack) {
		t.Fatalf("read buffer grew to %d bytes, limit %d", cap(d.buf), m)
	}
	// append may round a growing slice's capacity up to twice the need.
	if cap(d.data) > 2*(m+1)+64 || cap(d.typ) > 2*(m+lineSlack)+64 || len(d.idBuf) > 3*(m+lineSlack) {
		t.Fatalf("buffers over limit %d: data %d, type %d, id %d", m, cap(d.data), cap(d.typ), len(d.idBuf))
	}
}

func TestDecoderDefaultLimit(t *testing.T) {
	big := strings.Repeat("y", DefaultMaxEventSize)
	got := decodeAll(strings.NewReader("data: "+big+"\n\ndata: "+big+"y\n\n"), 0)
	if len(got.Events) != 1 || got.Events[0].Data != big || got.Err != ErrEventTooLarge {
		t.Fatalf("got %d events, error %v; want the 1 MiB event then ErrEventTooLarge", len(got.Events), got.Err)
	}
}

func TestDecoderReadErrors(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom))
	got := decodeAll(r, 0)
	if !reflect.DeepEqual(got.Events, []Event{ev("", "", "a")}) || got.Err != boom {
		t.Fatalf("got %q, %v; want event a then the read error", got.Events, got.Err)
	}

	// A reader that returns nothing, forever, is an error, not a hang.
	got = decodeAll(iotest.ErrReader(nil), 0)
	if got.Err != io.ErrNoProgress {
		t.Fatalf("empty reads: error %v, want io.ErrNoProgress", got.Err)
	}

	// After io.EOF, Next keeps returning io.EOF.
	d := NewDecoder(strings.NewReader("data: a\n\n"))
	for i, want := range []error{nil, io.EOF, io.EOF} {
		if _, err := d.Next(); err != want {
			t.Fatalf("call %d: %v, want %v", i, err, want)
		}
	}
}

func TestDecoderAllocs(t *testing.T) {
	stream := []byte(strings.Repeat("id: 12345\nevent: tick\ndata: {\"n\":1}\n\n: heartbeat\n\n", 100))
	r := bytes.NewReader(stream)
	d := NewDecoder(r)
	allocs := testing.AllocsPerRun(20, func() {
		r.Reset(stream)
		d.r, d.err = r, nil
		for {
			if _, err := d.Next(); err != nil {
				break
			}
		}
	})
	// One allocation per event (its Data); the id and type are reused.
	if allocs > 101 {
		t.Fatalf("%v allocations for 100 events, want at most 101", allocs)
	}
}

func TestValidString(t *testing.T) {
	// The WHATWG UTF-8 decoder's replacement rules, by example.
	tests := []struct{ in, want string }{
		{"abc", "abc"},
		{"\xff", "\uFFFD"},
		{"\xff\xff", "\uFFFD\uFFFD"},
		{"\xc0\x80", "\uFFFD\uFFFD"},           // overlong: C0 is never a lead byte
		{"\xe0\x80\x80", "\uFFFD\uFFFD\uFFFD"}, // overlong 3-byte
		{"\xe2\x82", "\uFFFD"},                 // truncated: one U+FFFD
		{"\xe2\x82x", "\uFFFDx"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\xa6", "\uFFFD"},
		{"\xf0\x9f\xa6\x8a", "🦊"},
		{"a\x80b", "a\uFFFDb"},
	}
	for _, tc := range tests {
		if got := validString([]byte(tc.in)); got != tc.want {
			t.Errorf("validString(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// referenceDecode is a literal transcription of the HTML Standard's event
// stream interpretation, kept simple rather than fast, used as an oracle.
func referenceDecode(in []byte) decoded {
	s := []rune(whatwgUTF8Decode(in))
	var out decoded
	var data, typ, idBuf, lastID []rune
	var blockRetry time.Duration
	hasData := false
	for len(s) > 0 {
		// Collect a line.
		end := -1
		for i, c := range s {
			if c == '\r' || c == '\n' {
				end = i
				break
			}
		}
		if end < 0 {
			break // an unterminated line at EOF is discarded
		}
		line := s[:end]
		if s[end] == '\r' && end+1 < len(s) && s[end+1] == '\n' {
			end++
		}
		s = s[end+1:]

		if len(line) == 0 {
			lastID = idBuf
			if !hasData {
				typ = nil
				blockRetry = 0
				continue
			}
			out.Events = append(out.Events, Event{ID: string(lastID), Type: string(typ), Data: string(data[:len(data)-1]), Retry: blockRetry})
			data, typ, hasData, blockRetry = nil, nil, false, 0
			continue
		}
		if line[0] == ':' {
			continue
		}
		name, value := line, []rune(nil)
		for i, c := range line {
			if c == ':' {
				name, value = line[:i], line[i+1:]
				if len(value) > 0 && value[0] == ' ' {
					value = value[1:]
				}
				break
			}
		}
		switch string(name) {
		case "event":
			typ = append([]rune(nil), value...)
		case "data":
			data = append(append(data, value...), '\n')
			hasData = true
		case "id":
			if !strings.ContainsRune(string(value), 0) {
				idBuf = append([]rune(nil), value...)
			}
		case "retry":
			ok := len(value) > 0
			var ms int64
			for _, c := range value {
				if c < '0' || c > '9' {
					ok = false
				}
				ms = min(ms*10+int64(c-'0'), math.MaxInt64/int64(time.Millisecond)+1)
			}
			if ok {
				out.Retry = time.Duration(math.MaxInt64)
				if ms <= math.MaxInt64/int64(time.Millisecond) {
					out.Retry = time.Duration(ms) * time.Millisecond
				}
				blockRetry = out.Retry
			}
		}
	}
	out.LastID = string(lastID)
	out.Err = io.EOF
	return out
}

// whatwgUTF8Decode is the Encoding Standard's "UTF-8 decode" (BOM sniffing
// included) written as its state machine.
func whatwgUTF8Decode(in []byte) string {
	if bytes.HasPrefix(in, bom) {
		in = in[3:]
	}
	var out []rune
	var cp rune
	needed, seen := 0, 0
	lower, upper := byte(0x80), byte(0xBF)
	for i := 0; i <= len(in); i++ {
		if i == len(in) {
			if needed != 0 {
				out = append(out, utf8.RuneError)
			}
			break
		}
		b := in[i]
		if needed == 0 {
			switch {
			case b <= 0x7F:
				out = append(out, rune(b))
			case b >= 0xC2 && b <= 0xDF:
				needed, cp = 1, rune(b&0x1F)
			case b >= 0xE0 && b <= 0xEF:
				if b == 0xE0 {
					lower = 0xA0
				}
				if b == 0xED {
					upper = 0x9F
				}
				needed, cp = 2, rune(b&0xF)
			case b >= 0xF0 && b <= 0xF4:
				if b == 0xF0 {
					lower = 0x90
				}
				if b == 0xF4 {
					upper = 0x8F
				}
				needed, cp = 3, rune(b&0x7)
			default:
				out = append(out, utf8.RuneError)
			}
			continue
		}
		if b < lower || b > upper {
			cp, needed, seen, lower, upper = 0, 0, 0, 0x80, 0xBF
			out = append(out, utf8.RuneError)
			i-- // prepend b to the stream
			continue
		}
		lower, upper = 0x80, 0xBF
		cp = cp<<6 | rune(b&0x3F)
		if seen++; seen == needed {
			out = append(out, cp)
			cp, needed, seen = 0, 0, 0
		}
	}
	return string(out)
}

var benchStream = []byte(strings.Repeat("id: 1700000000000-0\nevent: update\ndata: {\"user\":\"ada\",\"status\":\"online\",\"n\":12345}\n\n: heartbeat\n\n", 1000))

func benchmarkDecode(b *testing.B, stream []byte, wrap func(io.Reader) io.Reader) {
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	r := bytes.NewReader(stream)
	for b.Loop() {
		r.Reset(stream)
		d := NewDecoder(wrap(r))
		for {
			if _, err := d.Next(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}

func BenchmarkDecoder(b *testing.B) {
	id := func(r io.Reader) io.Reader { return r }
	b.Run("small-events", func(b *testing.B) { benchmarkDecode(b, benchStream, id) })
	b.Run("small-events-CRLF", func(b *testing.B) {
		benchmarkDecode(b, bytes.ReplaceAll(benchStream, []byte("\n"), []byte("\r\n")), id)
	})
	b.Run("small-events-64B-reads", func(b *testing.B) {
		benchmarkDecode(b, benchStream, func(r io.Reader) io.Reader { return &chunkReader{benchStream, 64} })
	})
	big := []byte(strings.Repeat("data: "+strings.Repeat("z", 1000)+"\n", 64) + "\n")
	b.Run("64KiB-event", func(b *testing.B) { benchmarkDecode(b, bytes.Repeat(big, 16), id) })
}
