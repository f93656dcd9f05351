package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pubEvent is one event to publish.
type pubEvent struct {
	topic string
	data  []byte
	key   string // idempotency key; empty: none
}

// publisher sends events; implementations are used by one goroutine each
// (one publisher is made per publishing goroutine).
type publisher interface {
	// publish sends evs in one request (one event: the single-event form;
	// more: a batch) and sets errs[i] to event i's failure, nil when it
	// was published. A failure of the whole request is every event's.
	publish(ctx context.Context, eventType string, evs []pubEvent, errs []error)
	close()
}

// httpPublisher posts one event as an application/x-www-form-urlencoded
// form (topic, data, event; the idempotency key in the Idempotency-Key
// header), several as one application/x-ndjson body, to a publish URL
// over a kept-alive connection.
type httpPublisher struct {
	url    string
	client *http.Client
	body   []byte
	ans    batchAnswer
}

// batchAnswer is the answer to a batch: one result per event, in order.
type batchAnswer struct {
	Results []batchResult `json:"results"`
}

type batchResult struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
	Error  string `json:"error"`
}

func newHTTPPublisher(u string, timeout time.Duration) *httpPublisher {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	return &httpPublisher{url: u, client: &http.Client{Transport: tr, Timeout: timeout}}
}

func (p *httpPublisher) publish(ctx context.Context, eventType string, evs []pubEvent, errs []error) {
	if len(evs) == 1 {
		errs[0] = p.publishOne(ctx, eventType, evs[0])
		return
	}
	p.publishBatch(ctx, eventType, evs, errs)
}

func (p *httpPublisher) publishOne(ctx context.Context, eventType string, ev pubEvent) error {
	b := append(p.body[:0], "topic="...)
	b = append(b, url.QueryEscape(ev.topic)...)
	if eventType != "" {
		b = append(b, "&event="...)
		b = append(b, url.QueryEscape(eventType)...)
	}
	b = append(b, "&data="...)
	b = appendQueryEscaped(b, ev.data)
	p.body = b
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if ev.key != "" {
		req.Header.Set("Idempotency-Key", ev.key)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		return fmt.Errorf("publish: status %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

func (p *httpPublisher) publishBatch(ctx context.Context, eventType string, evs []pubEvent, errs []error) {
	fail := func(err error) {
		for i := range errs {
			errs[i] = err
		}
	}
	b := p.body[:0]
	for _, ev := range evs {
		b = appendNDJSONEvent(b, ev, eventType)
	}
	p.body = b
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(b))
	if err != nil {
		fail(err)
		return
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := p.client.Do(req)
	if err != nil {
		fail(err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		fail(err)
		return
	}
	if err := parseBatchAnswer(resp.StatusCode, body, &p.ans, errs); err != nil {
		fail(err)
	}
}

// parseBatchAnswer sets errs from the answer to a batch of len(errs)
// events (status, body); it returns an error that is every event's when the
// answer has no result per event.
func parseBatchAnswer(status int, body []byte, ans *batchAnswer, errs []error) error {
	// json.Unmarshal decodes into the elements it finds: clear them, or a
	// result would keep fields of an earlier answer's.
	clear(ans.Results[:cap(ans.Results)])
	ans.Results = ans.Results[:0]
	if err := json.Unmarshal(body, ans); err != nil || len(ans.Results) != len(errs) ||
		(status != http.StatusOK && status != http.StatusMultiStatus && status < 400) {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 256 {
			msg = msg[:256]
		}
		if status == http.StatusOK || status == http.StatusMultiStatus {
			return fmt.Errorf("publish: status %d: %d results for %d events: %s", status, len(ans.Results), len(errs), msg)
		}
		return fmt.Errorf("publish: status %d: %s", status, msg)
	}
	for i, res := range ans.Results {
		switch {
		case res.ID != "" && res.Status == 0:
			errs[i] = nil
		case res.Status != 0:
			errs[i] = fmt.Errorf("publish: status %d: %s", res.Status, res.Error)
		default:
			errs[i] = fmt.Errorf("publish: status %d: %s", status, cmp.Or(res.Error, "no id in the result"))
		}
	}
	return nil
}

// appendNDJSONEvent appends one NDJSON line {"topic", "event", "data",
// "idempotency_key"} (event and key left out when empty).
func appendNDJSONEvent(dst []byte, ev pubEvent, eventType string) []byte {
	dst = append(dst, `{"topic":`...)
	dst = appendJSONString(dst, ev.topic)
	if eventType != "" {
		dst = append(dst, `,"event":`...)
		dst = appendJSONString(dst, eventType)
	}
	dst = append(dst, `,"data":`...)
	dst = appendJSONString(dst, ev.data)
	if ev.key != "" {
		dst = append(dst, `,"idempotency_key":`...)
		dst = appendJSONString(dst, ev.key)
	}
	return append(dst, "}\n"...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, other bytes (UTF-8 included) as they are.
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

func (p *httpPublisher) close() { p.client.CloseIdleConnections() }

// appendQueryEscaped form-encodes a bench payload (letters, digits, spaces
// and dots) without an intermediate string; other bytes are %-escaped.
func appendQueryEscaped(dst, s []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, c := range s {
		switch {
		case c == ' ':
			dst = append(dst, '+')
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
			dst = append(dst, c)
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

// redisPublisher publishes with FCALL <prefix>_publish, the Redis contract
// of herald's Redis broker, in the declared-keys form (the topic's stream
// and epoch keys, and its key record with an idempotency key), which every
// topology accepts and Redis Cluster requires; several events go as one
// pipeline.
type redisPublisher struct {
	rdb    redis.UniversalClient
	fn     string
	prefix string
	cmds   []*redis.Cmd
}

func newRedisPublisher(redisURL, prefix string, cluster bool) (*redisPublisher, error) {
	p := &redisPublisher{fn: prefix + "_publish", prefix: prefix}
	if cluster {
		opt, err := redis.ParseClusterURL(redisURL)
		if err != nil {
			return nil, fmt.Errorf("-redis-url: %w", err)
		}
		opt.PoolSize = 2
		// go-redis's ClusterClient sends a command again after an EOF
		// whatever MaxRetries says: a run with faults may count a
		// duplicate that herald did not make. None happen in a bench.
		opt.MaxRetries = -1
		p.rdb = redis.NewClusterClient(opt)
		return p, nil
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("-redis-url: %w", err)
	}
	opt.PoolSize = 2
	// No go-redis retries: a retried FCALL whose first reply was lost
	// publishes the event twice, which the bench would count as a
	// duplicate delivered by herald.
	opt.MaxRetries = -1
	p.rdb = redis.NewClient(opt)
	return p, nil
}

// keys are the keys an FCALL of ev declares.
func (p *redisPublisher) keys(ev pubEvent) []string {
	base := p.prefix + ":{" + ev.topic + "}"
	if ev.key != "" {
		return []string{base + ":s", base + ":e", base + ":k:" + ev.key}
	}
	return []string{base + ":s", base + ":e"}
}

func fcallArgs(eventType string, ev pubEvent) []any {
	if ev.key != "" {
		return []any{eventType, ev.data, ev.key}
	}
	return []any{eventType, ev.data}
}

func (p *redisPublisher) publish(ctx context.Context, eventType string, evs []pubEvent, errs []error) {
	if len(evs) == 1 {
		errs[0] = p.rdb.FCall(ctx, p.fn, p.keys(evs[0]), fcallArgs(eventType, evs[0])...).Err()
		return
	}
	p.cmds = p.cmds[:0]
	_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, ev := range evs {
			p.cmds = append(p.cmds, pipe.FCall(ctx, p.fn, p.keys(ev), fcallArgs(eventType, ev)...))
		}
		return nil
	})
	for i := range errs {
		if i < len(p.cmds) {
			errs[i] = p.cmds[i].Err()
		} else {
			errs[i] = err
		}
	}
}

func (p *redisPublisher) close() { _ = p.rdb.Close() }
