package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

// decodeUTF8 decodes s as a field value: like the stream decoder, without
// BOM stripping.
func decodeUTF8(s string) string {
	return whatwgUTF8Decode(append(append([]byte(nil), bom...), s...))
}

// FuzzRoundTrip: whatever the encoder accepts, a spec parser reads back
// exactly (line breaks in data normalised to LF, invalid UTF-8 replaced as
// a browser would); whatever would inject fields, the encoder refuses.
func FuzzRoundTrip(f *testing.F) {
	f.Add("1", "update", "hello", uint32(0))
	f.Add("", "", "", uint32(0))
	f.Add(" 1", " t", " x", uint32(1))
	f.Add("a", "b", "\tx\r\ny\rz\n", uint32(1500))
	f.Add("a\nb", "t", "x", uint32(0))
	f.Add("a\x00b", "t", "x", uint32(0))
	f.Add("a", "t\r", "x", uint32(0))
	f.Add("\uFEFF", "\xff", "\xe2\x82\n\xe2\x82", uint32(7))
	f.Add("", "", "id: 2\n\nevent: x\ndata: y\n\n", uint32(0))
	f.Fuzz(func(t *testing.T, id, typ, data string, retryMs uint32) {
		e := Event{ID: id, Type: typ, Data: data, Retry: time.Duration(retryMs) * time.Millisecond}
		b, err := AppendEvent([]byte("x"), &e)
		if strings.ContainsAny(id, "\r\n\x00") || strings.ContainsAny(typ, "\r\n\x00") {
			if err == nil || string(b) != "x" {
				t.Fatalf("AppendEvent accepted %+v: %q", e, b)
			}
			return
		}
		if err != nil {
			t.Fatalf("AppendEvent refused %+v: %v", e, err)
		}
		if !bytes.HasSuffix(b, []byte("\n\n")) || bytes.Contains(b, []byte("\r")) {
			t.Fatalf("bad framing: %q", b)
		}
		// Frame the event between a comment and a second event, to see
		// that it neither swallows nor leaks into its neighbours.
		stream := AppendComment(nil, "hi")
		stream = append(stream, b[1:]...)
		stream, _ = AppendEvent(stream, &Event{Data: "next"})

		data = strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
		want := []Event{
			{ID: decodeUTF8(id), Type: decodeUTF8(typ), Data: decodeUTF8(data), Retry: e.Retry},
			{ID: decodeUTF8(id), Data: "next"},
		}
		if utf8.ValidString(id) && utf8.ValidString(typ) && utf8.ValidString(data) {
			// Valid input must come back byte for byte.
			want[0] = Event{ID: id, Type: typ, Data: data, Retry: e.Retry}
			want[1].ID = id
		}
		for _, r := range []io.Reader{bytes.NewReader(stream), iotest.OneByteReader(bytes.NewReader(stream))} {
			got := decodeAll(r, 0)
			if got.Err != io.EOF || !reflect.DeepEqual(got.Events, want) {
				t.Fatalf("stream %q\ndecoded %+v (%v)\n   want %+v", stream, got.Events, got.Err, want)
			}
		}
	})
}

// FuzzDecode: on any input the decoder does not panic, keeps within its
// memory limit, returns valid UTF-8 and IDs a browser would accept, agrees
// with a literal transcription of the spec, and does not depend on how the
// input is cut into reads.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n",
		"\uFEFFid: 1\r\nevent: e\r\ndata: x\r\ndata\r\n\r\n",
		"data: a\rdata: b\r\r",
		"retry: 10\nid: 1\n\nid\n\nid: \x00\ndata\n\n",
		": comment\n\n" + strings.Repeat(":long", 20) + "\ndata: x\n\n",
		"data: \xe2\x82\ndata: \xff\xf0\x9f\xa6\n\n",
		"data: " + strings.Repeat("z", 40) + "\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		ref := referenceDecode(in)
		whole := decodeChecked(t, bytes.NewReader(in), 0)
		if !reflect.DeepEqual(whole, ref) {
			t.Fatalf("input %q\ndecoder   %+v\nreference %+v", in, whole, ref)
		}
		for _, e := range whole.Events {
			if !utf8.ValidString(e.ID) || !utf8.ValidString(e.Type) || !utf8.ValidString(e.Data) {
				t.Fatalf("invalid UTF-8 in %+v", e)
			}
			if strings.ContainsAny(e.ID, "\r\n\x00") || strings.ContainsAny(e.Type, "\r\n") {
				t.Fatalf("bad id or type in %+v", e)
			}
		}
		cut := len(in) / 3
		readers := map[string]io.Reader{
			"1byte":   iotest.OneByteReader(bytes.NewReader(in)),
			"half":    iotest.HalfReader(bytes.NewReader(in)),
			"crsplit": &splitReader{in},
			"cut":     io.MultiReader(bytes.NewReader(in[:cut]), bytes.NewReader(in[cut:])),
			"dataerr": iotest.DataErrReader(bytes.NewReader(in)),
		}
		for name, r := range readers {
			if got := decodeChecked(t, r, 0); !reflect.DeepEqual(got, whole) {
				t.Fatalf("%s decode of %q\n got %+v\nwant %+v", name, in, got, whole)
			}
		}
		// With a tiny limit: bounded memory, and the same events as far as
		// it gets.
		for _, r := range []io.Reader{bytes.NewReader(in), iotest.OneByteReader(bytes.NewReader(in))} {
			small := decodeChecked(t, r, 16)
			switch {
			case small.Err == io.EOF:
				if !reflect.DeepEqual(small, whole) {
					t.Fatalf("limit 16 decode of %q\n got %+v\nwant %+v", in, small, whole)
				}
			case errors.Is(small.Err, ErrEventTooLarge):
				if len(small.Events) > len(whole.Events) || !slices.Equal(small.Events, whole.Events[:len(small.Events)]) {
					t.Fatalf("limit 16 decode of %q gave %+v before failing, want a prefix of %+v", in, small.Events, whole.Events)
				}
				for _, e := range small.Events {
					if len(e.Data) > 3*16 {
						t.Fatalf("event of %d bytes under limit 16", len(e.Data))
					}
				}
			default:
				t.Fatalf("limit 16 decode of %q failed with %v", in, small.Err)
			}
		}
	})
}

// decodeChecked is decodeAll, checking after each event that the decoder
// keeps within its limits.
func decodeChecked(t *testing.T, r io.Reader, maxEvent int) decoded {
	t.Helper()
	d := NewDecoder(r)
	d.MaxEventSize = maxEvent
	var out decoded
	for {
		e, err := d.Next()
		checkBounded(t, d)
		if err != nil {
			out.Err = err
			break
		}
		out.Events = append(out.Events, e)
	}
	out.LastID, out.Retry = d.LastEventID(), d.Retry()
	return out
}
