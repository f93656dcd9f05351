package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// subscriber is one SSE connection. Its counters are written only by its
// own goroutine and read by the runner after that goroutine has ended.
type subscriber struct {
	idx int
	// The topics it follows: first, first+1, ... (mod -topics), one
	// state each.
	first  int
	topics []topicState
	url    string
	conn   net.Conn

	connectTime time.Duration // dial to response headers
	opened      time.Duration // response headers read, since the run's start
	connected   bool
	connErr     error // failure before the stream started
	streamErr   error // the stream ended before the run stopped it
	alive       atomic.Bool
	unhook      func() bool   // stops closing conn when the run's context ends
	last        time.Duration // receive time of the last counted event, since the run's start
	hb          *hbStream     // heartbeat record when the stream is in the -hb-sample sample

	received uint64 // events with a parsable payload
	foreign  uint64 // events of a topic it does not follow or from another run
	other    uint64 // events without a bench payload (e.g. herald.reset)
}

// topicState is a subscriber's completeness on one topic it follows.
type topicState struct {
	seen    bitset
	maxSeq  uint64
	unique  uint64
	dup     uint64
	reorder uint64
}

// topicState returns the state of topic (an index), nil when s does not
// follow it; n is the number of topics.
func (s *subscriber) topicState(topic, n int) *topicState {
	if topic < 0 || topic >= n {
		return nil
	}
	off := topic - s.first
	if off < 0 {
		off += n
	}
	if off >= len(s.topics) {
		return nil
	}
	return &s.topics[off]
}

// bitset records which sequence numbers a subscriber has seen.
type bitset []uint64

// set marks i and reports whether it was already set.
func (b *bitset) set(i uint64) bool {
	w := int(i >> 6)
	if w >= len(*b) {
		n := max(2*len(*b), w+1, 16)
		nb := make(bitset, n)
		copy(nb, *b)
		*b = nb
	}
	m := uint64(1) << (i & 63)
	old := (*b)[w]&m != 0
	(*b)[w] |= m
	return old
}

// streamURL builds base + path + ?topic=name&topic=name2...
func streamURL(base, path string, topics ...string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(base, "/") + path)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%s: only http:// URLs are supported", base)
	}
	q := u.Query()
	q.Del("topic")
	for _, t := range topics {
		q.Add("topic", t)
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// dialer opens subscriber connections, optionally from several loopback
// source addresses (more than one source address raises the ~28k
// connections per destination that one address's ephemeral ports allow).
type dialer struct {
	timeout   time.Duration
	sourceIPs int
}

func (d *dialer) dial(ctx context.Context, u *url.URL, idx int) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if d.sourceIPs > 1 {
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback() && ip.To4() != nil) {
			nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+idx%d.sourceIPs))}
			nd.Control = bindNoPort
		}
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return nd.DialContext(ctx, "tcp", addr)
}

// open connects, sends the request and reads the response head. On
// success it returns the reader of the event stream (chunked transfer
// decoding included). Once dialled, the connection is closed when ctx ends
// (s.unhook cancels that).
func (s *subscriber) open(ctx context.Context, d *dialer, u *url.URL, extraHeader string) (*bufio.Reader, error) {
	start := time.Now()
	c, err := d.dial(ctx, u, s.idx)
	if err != nil {
		return nil, err
	}
	s.conn = c
	s.unhook = context.AfterFunc(ctx, func() { _ = c.Close() })
	_ = c.SetDeadline(start.Add(d.timeout))
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: herald-bench\r\n" + extraHeader + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return nil, fmt.Errorf("content type %q, want text/event-stream", ct)
	}
	_ = c.SetDeadline(time.Time{})
	s.connectTime = time.Since(start)
	body := resp.Body
	if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 {
		// HTTP/1.0-style body delimited by the connection's end.
		body = io.NopCloser(br)
	}
	return bufio.NewReaderSize(body, 4096), nil
}

// payloadSink receives the parsed payloads of one subscriber.
type payloadSink interface {
	// event is called for each dispatched event with the first line of
	// its data (valid until the call returns).
	event(s *subscriber, data []byte)
}

// readEvents parses the event stream until it ends: lines ending in LF
// (CR before it is dropped), "data:" lines, and a blank line dispatching
// the event. Only an event's first data line is passed to the sink (bench
// payloads are one line); id, event and retry fields are skipped, and so
// are comments, which count as heartbeats when s.hb is set. It allocates
// only when a line is longer than the reader's buffer.
func readEvents(r *bufio.Reader, s *subscriber, sink payloadSink) error {
	var (
		hasData bool
		first   []byte // copy of the first data line, reused
	)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if err != nil {
			return err
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			if hasData {
				sink.event(s, first)
				hasData = false
			}
			continue
		}
		if line[0] == ':' {
			if s.hb != nil {
				s.hb.beat()
			}
			continue
		}
		if !bytes.HasPrefix(line, dataField) {
			continue
		}
		if hasData {
			continue // a further data line: not part of a bench payload
		}
		v := line[len(dataField):]
		if len(v) > 0 && v[0] == ' ' {
			v = v[1:]
		}
		first = append(first[:0], v...)
		hasData = true
	}
}

var dataField = []byte("data:")
