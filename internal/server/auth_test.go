package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-sse/herald/internal/auth"
)

const (
	testSecret = "0123456789abcdef0123456789abcdef"
	testAPIKey = "service-key-0123456789"
)

func token(t testing.TB, pub, sub []string, exp time.Time) string {
	t.Helper()
	c := jwt.MapClaims{"sub": "alice", "herald": map[string]any{"publish": pub, "subscribe": sub}}
	if !exp.IsZero() {
		c["exp"] = exp.Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func withAuth(c *Config) {
	c.JWTSecret = testSecret
	c.APIKey = testAPIKey
}

// do sends a request and returns status, headers and body (streams are
// cut after their headers).
func (ls *liveServer) do(t *testing.T, method, path string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, ls.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := ls.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, resp.Header, ""
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestAuthSubscribe(t *testing.T) {
	ls := startServer(t, withAuth)
	tok := token(t, nil, []string{"news", "orders.*"}, time.Time{})
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	for _, tc := range []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
	}{
		{"bearer", "/events?topic=news", bearer, 200},
		{"bearer prefix pattern, two topics", "/events?topic=orders.1&topic=news", bearer, 200},
		{"cookie", "/events?topic=news", map[string]string{"Cookie": auth.CookieName + "=" + tok}, 200},
		{"query parameter", "/events?topic=news&access_token=" + url.QueryEscape(tok), nil, 200},
		{"no token", "/events?topic=news", nil, 401},
		{"garbage token", "/events?topic=news", map[string]string{"Authorization": "Bearer x.y.z"}, 401},
		{"api key does not subscribe", "/events?topic=news", map[string]string{"Authorization": "Bearer " + testAPIKey}, 401},
		{"expired", "/events?topic=news", map[string]string{"Authorization": "Bearer " + token(t, nil, []string{"*"}, time.Now().Add(-time.Hour))}, 401},
		{"topic not covered", "/events?topic=secret", bearer, 403},
		{"one of two topics not covered", "/events?topic=news&topic=secret", bearer, 403},
		{"invalid topic is 400 before auth", "/events?topic=a%20b", nil, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := ls.do(t, "GET", tc.path, tc.hdr, "")
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if status == 401 || status == 403 {
				if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", h.Get("WWW-Authenticate"))
				}
				if body == "" {
					t.Error("no message")
				}
			}
		})
	}
	// The answer for a topic that has events and one that never had any
	// is the same: authorization does not reveal which topics exist.
	ls.publishWith(t, map[string]string{"Authorization": "Bearer " + testAPIKey}, "secret.a", "x", 200)
	_, _, a := ls.do(t, "GET", "/events?topic=secret.a", bearer, "")
	_, _, b := ls.do(t, "GET", "/events?topic=secret.b", bearer, "")
	if strings.ReplaceAll(a, "secret.a", "T") != strings.ReplaceAll(b, "secret.b", "T") {
		t.Fatalf("answers differ: %q vs %q", a, b)
	}
}

func TestAnonymousSubscribeWithAuth(t *testing.T) {
	ls := startServer(t, func(c *Config) { withAuth(c); c.AnonymousSubscribe = true })
	if status, _, body := ls.do(t, "GET", "/events?topic=news", nil, ""); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	if status, _, _ := ls.do(t, "POST", "/publish", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "topic=news&data=x"); status != 401 {
		t.Fatalf("publish without a credential: %d", status)
	}
}

func (ls *liveServer) publishWith(t *testing.T, hdr map[string]string, topic, data string, want int) (string, http.Header) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	for k, v := range hdr {
		h[k] = v
	}
	status, rh, body := ls.do(t, "POST", "/publish", h, url.Values{"topic": {topic}, "data": {data}}.Encode())
	if status != want {
		t.Fatalf("publish %s: %d, want %d: %s", topic, status, want, body)
	}
	var out struct{ ID, Error string }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if want != 200 && out.Error == "" {
		t.Fatalf("no error message: %s", body)
	}
	return out.ID, rh
}

func TestAuthPublish(t *testing.T) {
	ls := startServer(t, withAuth)
	tok := token(t, []string{"orders.*"}, []string{"*"}, time.Time{})
	for _, tc := range []struct {
		name  string
		hdr   map[string]string
		topic string
		want  int
	}{
		{"api key", map[string]string{"Authorization": "Bearer " + testAPIKey}, "anything", 200},
		{"token", map[string]string{"Authorization": "Bearer " + tok}, "orders.1", 200},
		{"token without the right", map[string]string{"Authorization": "Bearer " + tok}, "news", 403},
		{"loopback alone is not enough", nil, "orders.1", 401},
		{"wrong key", map[string]string{"Authorization": "Bearer " + testAPIKey + "x"}, "orders.1", 401},
		{"cookie is not a publish credential", map[string]string{"Cookie": auth.CookieName + "=" + tok}, "orders.1", 401},
		{"basic auth", map[string]string{"Authorization": "Basic " + testAPIKey}, "orders.1", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, h := ls.publishWith(t, tc.hdr, tc.topic, "x", tc.want)
			if tc.want == 401 || tc.want == 403 {
				if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", h.Get("WWW-Authenticate"))
				}
			}
		})
	}
}

func TestAPIKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte(testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ls := startServer(t, func(c *Config) { c.APIKeyFile = path })
	ls.publishWith(t, map[string]string{"Authorization": "Bearer " + testAPIKey}, "a", "x", 200)
	ls.publishWith(t, nil, "a", "x", 401)
	// Only an API key: subscribing stays open.
	if status, _, body := ls.do(t, "GET", "/events?topic=a", nil, ""); status != 200 {
		t.Fatalf("%d %s", status, body)
	}
}

// A token that expires while its stream is open ends the stream; the
// client reconnects with a fresh token and its cursor and misses nothing.
func TestAuthStreamEndsAtExpiry(t *testing.T) {
	ls := startServer(t, func(c *Config) { withAuth(c); c.JWTLeeway = 0 })
	key := map[string]string{"Authorization": "Bearer " + testAPIKey}
	open := func(tok, lastID string) (*http.Response, *bufio.Reader, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, "GET", ls.URL+"/events?topic=news", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := ls.client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("subscribe: %v %v", err, resp)
		}
		return resp, bufio.NewReader(resp.Body), cancel
	}
	// exp has second precision: 2s ahead is at least 1s of stream.
	exp := time.Now().Add(2 * time.Second)
	resp, r, cancel := open(token(t, nil, []string{"news"}, exp), "")
	defer cancel()
	defer resp.Body.Close()
	id1, _ := ls.publishWith(t, key, "news", "one", 200)
	ended := make(chan string, 1)
	go func() {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				ended <- last
				return
			}
			if v, ok := strings.CutPrefix(line, "id: "); ok {
				last = strings.TrimSpace(v)
			}
		}
	}()
	var lastID string
	select {
	case lastID = <-ended:
	case <-time.After(15 * time.Second):
		t.Fatal("stream still open 15s after its token expired")
	}
	if time.Now().Before(exp.Truncate(time.Second)) {
		t.Fatalf("stream ended before the token's exp")
	}
	if lastID != id1 {
		t.Fatalf("last id %q, want %q", lastID, id1)
	}
	if got := testutilCounter(t, ls, `herald_streams_closed_total{reason="expired"}`); got != 1 {
		t.Errorf("expired streams metric %v", got)
	}
	// Published while the client had no stream.
	id2, _ := ls.publishWith(t, key, "news", "two", 200)
	resp2, r2, cancel2 := open(token(t, nil, []string{"news"}, time.Now().Add(time.Hour)), lastID)
	defer cancel2()
	defer resp2.Body.Close()
	for {
		line, err := r2.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: ") {
			if line != "data: two\n" {
				t.Fatalf("resumed with %q", line)
			}
			break
		}
		if v, ok := strings.CutPrefix(line, "id: "); ok && strings.TrimSpace(v) != id2 && strings.TrimSpace(v) != lastID {
			t.Fatalf("unexpected id %q", v)
		}
	}
}

// testutilCounter reads one sample of /metrics.
func testutilCounter(t *testing.T, ls *liveServer, series string) float64 {
	t.Helper()
	_, _, body := ls.do(t, "GET", "/metrics", nil, "")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return 0
}

func TestPublishRateLimit(t *testing.T) {
	ls := startServer(t, func(c *Config) { withAuth(c); c.PublishRate = 0.01; c.PublishBurst = 2 })
	alice := map[string]string{"Authorization": "Bearer " + token(t, []string{"*"}, nil, time.Time{})}
	ls.publishWith(t, alice, "a", "1", 200)
	ls.publishWith(t, alice, "a", "2", 200)
	_, h := ls.publishWith(t, alice, "a", "3", 429)
	if ra, err := strconv.Atoi(h.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", h.Get("Retry-After"))
	}
	// Another credential has its own bucket.
	ls.publishWith(t, map[string]string{"Authorization": "Bearer " + testAPIKey}, "a", "4", 200)
	// Unauthenticated requests are refused before they cost a token.
	ls.publishWith(t, nil, "a", "5", 401)
}

func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(2, 3)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.allow("k"); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	ok, wait := l.allow("k")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("over the burst: %v %v", ok, wait)
	}
	if ok, _ := l.allow("other"); !ok {
		t.Fatal("another key refused")
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if ok, _ := l.allow("k"); !ok {
		t.Fatal("refused after refill")
	}
	if ok, _ := l.allow("k"); ok {
		t.Fatal("allowed beyond the refill")
	}
	// Memory stays bounded: idle buckets go.
	for i := range maxRateBuckets + 10 {
		l.allow(strconv.Itoa(i))
		if i%1000 == 0 {
			now = now.Add(10 * time.Second)
		}
	}
	if n := len(l.buckets); n > maxRateBuckets {
		t.Fatalf("%d buckets", n)
	}
	if retryAfter(1500*time.Millisecond) != 2 || retryAfter(time.Millisecond) != 1 {
		t.Fatal("retryAfter")
	}
}
