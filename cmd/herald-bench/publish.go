package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// publisher sends one event; implementations are used by one goroutine
// each (newPublisher is called once per publishing goroutine).
type publisher interface {
	publish(ctx context.Context, topic, eventType string, data []byte) error
	close()
}

// httpPublisher posts application/x-www-form-urlencoded forms (topic, data,
// event) to a publish URL over a kept-alive connection.
type httpPublisher struct {
	url    string
	client *http.Client
	body   []byte
}

func newHTTPPublisher(u string, timeout time.Duration) *httpPublisher {
	tr := &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}
	return &httpPublisher{url: u, client: &http.Client{Transport: tr, Timeout: timeout}}
}

func (p *httpPublisher) publish(ctx context.Context, topic, eventType string, data []byte) error {
	b := append(p.body[:0], "topic="...)
	b = append(b, url.QueryEscape(topic)...)
	if eventType != "" {
		b = append(b, "&event="...)
		b = append(b, url.QueryEscape(eventType)...)
	}
	b = append(b, "&data="...)
	b = appendQueryEscaped(b, data)
	p.body = b
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
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

// redisPublisher publishes with FCALL <prefix>_publish 1 <topic> <event-type>
// <data>, the Redis contract of herald's Redis broker.
type redisPublisher struct {
	rdb *redis.Client
	fn  string
}

func newRedisPublisher(redisURL, prefix string) (*redisPublisher, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("-redis-url: %w", err)
	}
	opt.PoolSize = 2
	// No go-redis retries: a retried FCALL whose first reply was lost
	// publishes the event twice, which the bench would count as a
	// duplicate delivered by herald.
	opt.MaxRetries = -1
	return &redisPublisher{rdb: redis.NewClient(opt), fn: prefix + "_publish"}, nil
}

func (p *redisPublisher) publish(ctx context.Context, topic, eventType string, data []byte) error {
	return p.rdb.FCall(ctx, p.fn, []string{topic}, eventType, data).Err()
}

func (p *redisPublisher) close() { _ = p.rdb.Close() }
