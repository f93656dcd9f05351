package sse

import (
	"bytes"
	"errors"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// DefaultMaxEventSize is the default limit on an event's data, in bytes, for
// Decoder.MaxEventSize and Client.MaxEventSize: 1 MiB.
const DefaultMaxEventSize = 1 << 20

// ErrEventTooLarge is returned by Decoder.Next when an event's data, or a
// single non-comment line, exceeds the decoder's limit. It is final: the
// decoder returns it from then on.
var ErrEventTooLarge = errors.New("sse: event too large")

const (
	// lineSlack is what a line may have on top of MaxEventSize: the field
	// name, the colon and the space ("retry: ", "data: ").
	lineSlack = 16
	// initialBufSize is the read buffer a decoder starts with; it grows
	// (up to the line limit) only for longer lines.
	initialBufSize = 4096
	// maxEmptyReads is how many (0, nil) reads in a row are tolerated
	// before giving up with io.ErrNoProgress, like bufio.
	maxEmptyReads = 100
)

var bom = []byte("\xEF\xBB\xBF")

// A Decoder reads server-sent events from a stream, following the HTML
// Standard's rules for parsing an event stream exactly:
//
//   - LF, CR and CRLF end lines, wherever the reads split them (a CR at the
//     end of one read and an LF at the start of the next are one line end);
//   - one leading byte order mark is skipped, at the start of the stream
//     only;
//   - the stream is decoded as UTF-8, invalid sequences becoming U+FFFD as
//     in a browser;
//   - lines starting with a colon are comments and ignored; a line without
//     a colon is a field with an empty value; one space after the colon is
//     stripped; field names match exactly and unknown fields are ignored;
//   - data lines are joined with LF; an id containing NUL is ignored; retry
//     counts only when it is all ASCII digits;
//   - a blank line dispatches the event, unless its data buffer is empty
//     (then only the last event ID is updated); an unfinished event at the
//     end of the stream is discarded, id included.
//
// Memory is bounded: an event's data may hold at most MaxEventSize bytes (as
// received, before invalid UTF-8 is replaced) and a line at most
// MaxEventSize plus a few bytes for the field name, or Next fails with
// ErrEventTooLarge. Comment lines of any length are skipped without being
// buffered.
//
// A Decoder is not safe for concurrent use.
type Decoder struct {
	// MaxEventSize is the limit on an event's data, in bytes; zero or
	// negative means DefaultMaxEventSize. Set it before the first call to
	// Next.
	MaxEventSize int

	r     io.Reader
	err   error // sticky read error; buffered lines are parsed first
	fatal error // sticky ErrEventTooLarge

	// buf[rpos:wpos] holds bytes read but not yet parsed.
	buf        []byte
	rpos, wpos int
	// Scan state, so that a line arriving in many small reads is scanned
	// once: lfPos, if >= rpos, is the first LF at or after rpos; otherwise
	// buf[rpos:lfScan] holds no LF. buf[rpos:crScan] holds no CR.
	lfPos, lfScan, crScan int

	started    bool // the BOM check is done
	skipLF     bool // the last line ended with a CR: skip one LF
	discarding bool // inside an overlong comment line
	emptyReads int

	data      []byte // data buffer, each line followed by LF
	typ       []byte // event type buffer
	typStr    string // string form of the last dispatched type, reused
	idBuf     string // last event ID buffer
	lastID    string // last event ID string
	retry     time.Duration
	retrySet  bool
	lineRetry time.Duration // valid retry seen in the current block
}

// NewDecoder returns a decoder reading from r. It buffers its reads.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: r, lfPos: -1}
}

// LastEventID returns the last event ID: the value of the most recent id
// field (without NUL) of a block that ended with a blank line, whether or
// not that block dispatched an event. An empty id field resets it to "".
func (d *Decoder) LastEventID() string { return d.lastID }

// Retry returns the reconnection time set by the most recent valid retry
// field, or 0 if there was none (or the server sent "retry: 0"). Unlike
// the other fields it takes effect at once, even in an unfinished event.
// Values too large for a time.Duration saturate.
func (d *Decoder) Retry() time.Duration { return d.retry }

// setLastEventID starts the decoder with a last event ID, as a browser's
// EventSource keeps its last event ID across reconnections.
func (d *Decoder) setLastEventID(id string) {
	d.idBuf, d.lastID = id, id
}

func (d *Decoder) maxEvent() int {
	if d.MaxEventSize <= 0 {
		return DefaultMaxEventSize
	}
	return d.MaxEventSize
}

// Next reads up to the next dispatched event and returns it. The event's
// ID is the last event ID at dispatch (it persists across events until the
// next id field), Type is the event field or "" if there was none (a
// browser calls such an event "message"), Data is the data lines joined
// with LF, and Retry is the value of a valid retry field in the event's own
// block, or 0.
//
// At the end of the stream Next returns io.EOF (an unfinished event is
// discarded); a read error is returned as is, after the events received
// before it. A data buffer or line over the limit gives ErrEventTooLarge.
// Errors are final: Next keeps returning the same error.
func (d *Decoder) Next() (Event, error) {
	if d.fatal != nil {
		return Event{}, d.fatal
	}
	for {
		line, err := d.readLine()
		if err != nil {
			// An unfinished event is discarded with its id.
			d.data, d.typ, d.idBuf, d.lineRetry = d.data[:0], d.typ[:0], d.lastID, 0
			if errors.Is(err, ErrEventTooLarge) {
				d.fatal = err
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if ev, ok := d.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		if err := d.field(line); err != nil {
			d.fatal = err
			return Event{}, err
		}
	}
}

// field processes one non-empty, non-comment line.
func (d *Decoder) field(line []byte) error {
	name, value := line, line[len(line):]
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		if len(d.data)+len(value) > d.maxEvent() {
			return ErrEventTooLarge
		}
		d.data = append(d.data, value...)
		d.data = append(d.data, '\n')
	case "event":
		d.typ = append(d.typ[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 && string(value) != d.idBuf {
			d.idBuf = validString(value)
		}
	case "retry":
		if r, ok := parseRetry(value); ok {
			d.retry, d.retrySet, d.lineRetry = r, true, r
		}
	}
	return nil
}

// parseRetry parses an all-digits retry value as milliseconds, saturating.
func parseRetry(v []byte) (time.Duration, bool) {
	if len(v) == 0 {
		return 0, false
	}
	const maxMs = math.MaxInt64 / int64(time.Millisecond)
	var ms int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms <= maxMs {
			ms = ms*10 + int64(c-'0')
		}
	}
	if ms > maxMs {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(ms) * time.Millisecond, true
}

// dispatch runs the spec's dispatch steps at a blank line.
func (d *Decoder) dispatch() (Event, bool) {
	d.lastID = d.idBuf
	retry := d.lineRetry
	d.lineRetry = 0
	if len(d.data) == 0 {
		d.typ = d.typ[:0]
		return Event{}, false
	}
	ev := Event{
		ID:    d.lastID,
		Data:  validString(d.data[:len(d.data)-1]),
		Retry: retry,
	}
	if len(d.typ) > 0 {
		if string(d.typ) != d.typStr {
			d.typStr = validString(d.typ)
		}
		ev.Type = d.typStr
	}
	d.data, d.typ = d.data[:0], d.typ[:0]
	return ev, true
}

// readLine returns the next complete line without its line ending. The
// slice is valid until the next call.
func (d *Decoder) readLine() ([]byte, error) {
	if d.buf == nil {
		n := initialBufSize
		if m := d.maxEvent() + lineSlack; m < n {
			n = m
		}
		d.buf = make([]byte, n)
	}
	for {
		if !d.started {
			if d.wpos-d.rpos < len(bom) && d.err == nil {
				d.fill()
				continue
			}
			d.started = true
			if bytes.HasPrefix(d.buf[d.rpos:d.wpos], bom) {
				d.rpos += len(bom)
			}
		}
		if line, ok := d.scan(); ok {
			if d.discarding {
				d.discarding = false
				continue
			}
			return line, nil
		}
		if d.err != nil {
			return nil, d.err
		}
		if d.wpos-d.rpos >= d.maxEvent()+lineSlack {
			// A line over the limit: a comment is skipped, anything
			// else is an error.
			if !d.discarding && d.buf[d.rpos] != ':' {
				return nil, ErrEventTooLarge
			}
			d.discarding = true
			d.rpos = d.wpos
		}
		d.fill()
	}
}

// scan cuts the next line out of buf[rpos:wpos], if it holds a whole one.
func (d *Decoder) scan() ([]byte, bool) {
	if d.skipLF && d.rpos < d.wpos {
		d.skipLF = false
		if d.buf[d.rpos] == '\n' {
			d.rpos++
		}
	}
	if d.rpos >= d.wpos {
		return nil, false
	}
	if d.lfPos < d.rpos {
		from := max(d.rpos, d.lfScan)
		if i := bytes.IndexByte(d.buf[from:d.wpos], '\n'); i >= 0 {
			d.lfPos = from + i
		} else {
			d.lfPos, d.lfScan = -1, d.wpos
		}
	}
	end := d.wpos
	if d.lfPos >= 0 {
		end = d.lfPos
	}
	from := max(d.rpos, d.crScan)
	if i := bytes.IndexByte(d.buf[from:end], '\r'); i >= 0 {
		cr := from + i
		line := d.buf[d.rpos:cr]
		d.rpos = cr + 1
		if d.rpos < d.wpos {
			if d.buf[d.rpos] == '\n' {
				d.rpos++
			}
		} else {
			d.skipLF = true
		}
		return line, true
	}
	d.crScan = end
	if d.lfPos >= 0 {
		line := d.buf[d.rpos:d.lfPos]
		d.rpos = d.lfPos + 1
		return line, true
	}
	return nil, false
}

// fill reads more bytes into buf, making room first. Read errors are kept
// in d.err.
func (d *Decoder) fill() {
	if d.rpos == d.wpos {
		d.rpos, d.wpos, d.lfPos, d.lfScan, d.crScan = 0, 0, -1, 0, 0
	} else if d.wpos == len(d.buf) {
		if d.rpos > 0 {
			// Shift the unparsed bytes down.
			n := copy(d.buf, d.buf[d.rpos:d.wpos])
			shift := d.rpos
			d.rpos, d.wpos = 0, n
			if d.lfPos -= shift; d.lfPos < 0 {
				d.lfPos = -1
			}
			d.lfScan = max(d.lfScan-shift, 0)
			d.crScan = max(d.crScan-shift, 0)
		} else {
			// The line is longer than the buffer: grow, up to the limit.
			size := min(2*len(d.buf), d.maxEvent()+lineSlack)
			nb := make([]byte, size)
			copy(nb, d.buf[:d.wpos])
			d.buf = nb
		}
	}
	n, err := d.r.Read(d.buf[d.wpos:])
	if n < 0 || n > len(d.buf)-d.wpos {
		d.err = errors.New("sse: reader returned an invalid count")
		return
	}
	d.wpos += n
	switch {
	case err != nil:
		d.err = err
	case n == 0:
		if d.emptyReads++; d.emptyReads >= maxEmptyReads {
			d.err = io.ErrNoProgress
		}
	default:
		d.emptyReads = 0
	}
}

// validString returns b as a string, each invalid UTF-8 sequence replaced
// by U+FFFD the way the WHATWG UTF-8 decoder does it (one U+FFFD per
// maximal subpart, so a truncated sequence gives one, a stray byte one).
func validString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		var need int
		lo, hi := byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c >= 0xE0 && c <= 0xEF:
			need = 2
			if c == 0xE0 {
				lo = 0xA0
			} else if c == 0xED {
				hi = 0x9F
			}
		case c >= 0xF0 && c <= 0xF4:
			need = 3
			if c == 0xF0 {
				lo = 0x90
			} else if c == 0xF4 {
				hi = 0x8F
			}
		default:
			out = append(out, "\uFFFD"...)
			i++
			continue
		}
		j, k := i+1, 0
		for ; k < need && j < len(b) && b[j] >= lo && b[j] <= hi; k++ {
			lo, hi = 0x80, 0xBF
			j++
		}
		if k == need {
			out = append(out, b[i:j]...)
		} else {
			// The offending byte, if any, is not consumed: it starts
			// the next sequence.
			out = append(out, "\uFFFD"...)
		}
		i = j
	}
	return string(out)
}
