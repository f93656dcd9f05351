package sse

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Event is one server-sent event.
type Event struct {
	// ID sets the client's last event ID. Empty means no id field: the
	// client keeps its previous last event ID. It must not contain CR, LF
	// or NUL.
	ID string
	// Type is the event type (the event field); empty means "message". It
	// must not contain CR or LF.
	Type string
	// Data is the payload. Line breaks (LF, CR or CRLF) are written as
	// several data lines, which clients join back with LF. An empty Data is
	// a valid payload: the event is still dispatched.
	Data string
	// Retry, if positive, tells the client how long to wait before
	// reconnecting, in whole milliseconds.
	Retry time.Duration
}

// Encoding errors.
var (
	ErrInvalidID   = errors.New("sse: event id must not contain CR, LF or NUL")
	ErrInvalidType = errors.New("sse: event type must not contain CR, LF or NUL")
)

// Validate reports whether e can be written without injecting fields.
func (e *Event) Validate() error {
	if strings.ContainsAny(e.ID, "\r\n\x00") {
		return ErrInvalidID
	}
	if strings.ContainsAny(e.Type, "\r\n\x00") {
		return ErrInvalidType
	}
	return nil
}

// AppendEvent appends the wire form of e to dst: the id, event and retry
// fields, one data line per line of Data, and the blank line that
// dispatches the event. Every value is written after "field: ", so a value
// starting with a space survives the client's one-space strip. It returns
// dst unchanged and an error if e.ID or e.Type contains CR, LF or NUL.
func AppendEvent(dst []byte, e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return dst, err
	}
	if e.ID != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, e.ID...)
		dst = append(dst, '\n')
	}
	if e.Type != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, e.Type...)
		dst = append(dst, '\n')
	}
	if e.Retry > 0 {
		dst = appendRetry(dst, e.Retry)
	}
	dst = appendData(dst, e.Data)
	return append(dst, '\n'), nil
}

// appendData writes data as data lines, splitting at LF, CR and CRLF.
func appendData(dst []byte, data string) []byte {
	for {
		i := strings.IndexAny(data, "\r\n")
		if i < 0 {
			dst = append(dst, "data: "...)
			dst = append(dst, data...)
			return append(dst, '\n')
		}
		dst = append(dst, "data: "...)
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

func appendRetry(dst []byte, d time.Duration) []byte {
	ms := d.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, ms, 10)
	return append(dst, '\n')
}

// AppendComment appends text as comment lines (": text"), one per line of
// text, followed by a blank line. Clients ignore comments; they keep
// proxies and load balancers from closing an idle stream.
func AppendComment(dst []byte, text string) []byte {
	for {
		i := strings.IndexAny(text, "\r\n")
		line := text
		if i >= 0 {
			line = text[:i]
		}
		if line == "" {
			dst = append(dst, ':')
		} else {
			dst = append(dst, ": "...)
			dst = append(dst, line...)
		}
		dst = append(dst, '\n')
		if i < 0 {
			return append(dst, '\n')
		}
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
}

// AppendRetry appends a block that only sets the client's reconnection
// delay (in whole milliseconds, at least 1).
func AppendRetry(dst []byte, d time.Duration) []byte {
	return append(appendRetry(dst, d), '\n')
}

// AppendID appends a block that only sets the client's last event ID,
// without dispatching an event. id must be non-empty and free of CR, LF and
// NUL (an empty id field would reset the client's last event ID).
func AppendID(dst []byte, id string) ([]byte, error) {
	if id == "" || strings.ContainsAny(id, "\r\n\x00") {
		return dst, fmt.Errorf("%w (or empty)", ErrInvalidID)
	}
	dst = append(dst, "id: "...)
	dst = append(dst, id...)
	return append(dst, '\n', '\n'), nil
}

// WriteEvent writes e to w (see AppendEvent).
func WriteEvent(w io.Writer, e *Event) error {
	b, err := AppendEvent(make([]byte, 0, 32+len(e.ID)+len(e.Type)+len(e.Data)), e)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
