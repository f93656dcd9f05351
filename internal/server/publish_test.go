package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
)

func newTestPublish(t *testing.T, fb *fakeBroker, mutate func(*Config)) (http.Handler, *Metrics) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.MaxEventBytes = 100
	cfg.MaxBodyBytes = 1000
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(t.Context(), cfg, Options{Broker: fb, BrokerKind: "fake", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler(), s.Metrics()
}

type pubCase struct {
	name        string
	method      string
	contentType string
	body        string
	remote      string // RemoteAddr; default loopback
	header      map[string]string
	brokerErr   error
	wantStatus  int
	wantErr     string // substring of the error message
	wantTopic   string
	wantMsg     broker.Message
}

func multipartBody(t *testing.T, fields [][2]string) (string, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		if err := mw.WriteField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.String()
}

func TestPublish(t *testing.T) {
	mpType, mpBody := multipartBody(t, [][2]string{{"topic", "news"}, {"event", "note"}, {"data", "line1\nline2"}})
	mpFileType, mpFileBody := func() (string, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("topic", "news")
		fw, _ := mw.CreateFormFile("data", "x.txt")
		_, _ = fw.Write([]byte("file"))
		_ = mw.Close()
		return mw.FormDataContentType(), buf.String()
	}()
	form := "application/x-www-form-urlencoded"
	js := "application/json"
	tests := []pubCase{
		{name: "form", contentType: form, body: "topic=news&data=hello", wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{Data: "hello"}},
		{name: "form with event", contentType: form, body: "topic=news&event=update&data=a%0Ab", wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{Type: "update", Data: "a\nb"}},
		{name: "form empty data", contentType: form, body: "topic=news", wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{}},
		{name: "multipart", contentType: mpType, body: mpBody, wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{Type: "note", Data: "line1\nline2"}},
		{name: "json", contentType: js, body: `{"topic":"news","event":"e","data":"{\"x\":1}"}`, wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{Type: "e", Data: `{"x":1}`}},
		{name: "json charset", contentType: "application/json; charset=utf-8", body: `{"topic":"t","data":"d"}` + "\n", wantStatus: 200, wantTopic: "t", wantMsg: broker.Message{Data: "d"}},
		{name: "ipv6 loopback", contentType: form, body: "topic=news&data=x", remote: "[::1]:5555", wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{Data: "x"}},
		{name: "127.x loopback", contentType: form, body: "topic=news&data=x", remote: "127.3.4.5:5555", wantStatus: 200, wantTopic: "news", wantMsg: broker.Message{Data: "x"}},

		{name: "missing topic form", contentType: form, body: "data=hello", wantStatus: 400, wantErr: "missing topic"},
		{name: "missing topic json", contentType: js, body: `{"data":"x"}`, wantStatus: 400, wantErr: "missing topic"},
		{name: "invalid topic", contentType: form, body: "topic=a+b&data=x", wantStatus: 400, wantErr: "invalid topic"},
		{name: "topic too long", contentType: form, body: "topic=" + strings.Repeat("t", broker.MaxTopicLen+1), wantStatus: 400, wantErr: "limit"},
		{name: "topic twice", contentType: form, body: "topic=a&topic=b&data=x", wantStatus: 400, wantErr: "given 2 times"},
		{name: "event with newline", contentType: form, body: "topic=a&event=x%0Ay&data=x", wantStatus: 400, wantErr: "CR, LF or NUL"},
		{name: "reserved event type", contentType: js, body: `{"topic":"a","event":"herald.reset","data":"x"}`, wantStatus: 400, wantErr: "reserved"},
		{name: "bad json", contentType: js, body: `{"topic":`, wantStatus: 400, wantErr: "bad JSON"},
		{name: "empty json", contentType: js, body: ``, wantStatus: 400, wantErr: "empty JSON"},
		{name: "json unknown field", contentType: js, body: `{"topic":"a","data":"x","extra":1}`, wantStatus: 400, wantErr: "unknown field"},
		{name: "json trailing garbage", contentType: js, body: `{"topic":"a","data":"x"} xyz`, wantStatus: 400, wantErr: "bad JSON"},
		{name: "json second object", contentType: js, body: `{"topic":"a","data":"x"}{"topic":"b"}`, wantStatus: 400, wantErr: "after the object"},
		{name: "json data not string", contentType: js, body: `{"topic":"a","data":{"x":1}}`, wantStatus: 400, wantErr: "bad JSON"},
		{name: "empty json array", contentType: js, body: `[]`, wantStatus: 400, wantErr: "empty batch"},
		{name: "multipart file part", contentType: mpFileType, body: mpFileBody, wantStatus: 400, wantErr: "file parts"},
		{name: "multipart without boundary", contentType: "multipart/form-data", body: "x", wantStatus: 400, wantErr: "bad multipart"},

		{name: "GET", method: "GET", wantStatus: 405, wantErr: "use POST"},
		{name: "PUT", method: "PUT", contentType: form, body: "topic=a", wantStatus: 405, wantErr: "use POST"},

		{name: "body too large", contentType: form, body: "topic=a&data=" + strings.Repeat("x", 2000), wantStatus: 413, wantErr: "--max-body-bytes"},
		{name: "json body too large", contentType: js, body: `{"topic":"a","data":"` + strings.Repeat("x", 2000) + `"}`, wantStatus: 413, wantErr: "--max-body-bytes"},
		{name: "data too large", contentType: form, body: "topic=a&data=" + strings.Repeat("x", 101), wantStatus: 413, wantErr: "--max-event-bytes"},
		{name: "data at limit", contentType: form, body: "topic=a&data=" + strings.Repeat("x", 100), wantStatus: 200, wantTopic: "a", wantMsg: broker.Message{Data: strings.Repeat("x", 100)}},

		{name: "no content type", body: "topic=a", wantStatus: 415, wantErr: "missing Content-Type"},
		{name: "text/plain", contentType: "text/plain", body: "topic=a", wantStatus: 415, wantErr: "unsupported Content-Type"},
		{name: "garbage content type", contentType: ";;;", body: "topic=a", wantStatus: 415, wantErr: "Content-Type"},

		{name: "broker unavailable", contentType: form, body: "topic=a&data=x", brokerErr: fmt.Errorf("redis down: %w", broker.ErrUnavailable), wantStatus: 503, wantErr: "retry later"},
		{name: "broker closed", contentType: form, body: "topic=a&data=x", brokerErr: broker.ErrClosed, wantStatus: 503, wantErr: "retry later"},
		{name: "broker other error", contentType: form, body: "topic=a&data=x", brokerErr: errors.New("boom"), wantStatus: 500, wantErr: "boom"},

		{name: "remote peer refused", contentType: form, body: "topic=a&data=x", remote: "203.0.113.9:4000", wantStatus: 403, wantErr: "--publish-allow"},
		{name: "remote peer with forwarded-for loopback still refused", contentType: form, body: "topic=a&data=x", remote: "10.0.0.2:4000",
			header: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}, wantStatus: 403, wantErr: "loopback"},
		{name: "cross-origin browser refused", contentType: form, body: "topic=a&data=x",
			header: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, wantStatus: 403, wantErr: "--cors-origins"},
		{name: "same-origin browser ok", contentType: form, body: "topic=a&data=x",
			header: map[string]string{"Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}, wantStatus: 200, wantTopic: "a", wantMsg: broker.Message{Data: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &fakeBroker{err: tt.brokerErr}
			h, m := newTestPublish(t, fb, nil)
			rec := doPublish(h, tt)
			checkPublish(t, rec, fb, tt)
			if tt.wantStatus != 200 {
				if got := counterValue(t, m, "herald_publish_errors_total", fmt.Sprint(tt.wantStatus)); got != 1 {
					t.Errorf("herald_publish_errors_total{code=%d} = %v, want 1", tt.wantStatus, got)
				}
			} else if got := counterValue(t, m, "herald_events_published_total", ""); got != 1 {
				t.Errorf("herald_events_published_total = %v, want 1", got)
			}
		})
	}
}

func doPublish(h http.Handler, tt pubCase) *httptest.ResponseRecorder {
	method := tt.method
	if method == "" {
		method = http.MethodPost
	}
	req := httptest.NewRequest(method, "http://example.com/publish", strings.NewReader(tt.body))
	if tt.contentType != "" {
		req.Header.Set("Content-Type", tt.contentType)
	}
	for k, v := range tt.header {
		req.Header.Set(k, v)
	}
	req.RemoteAddr = "127.0.0.1:40000"
	if tt.remote != "" {
		req.RemoteAddr = tt.remote
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkPublish(t *testing.T, rec *httptest.ResponseRecorder, fb *fakeBroker, tt pubCase) {
	t.Helper()
	if rec.Code != tt.wantStatus {
		t.Fatalf("status %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var body map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("answer is not a JSON object of strings: %q: %v", rec.Body, err)
	}
	last, n := fb.last()
	if tt.wantStatus == 200 {
		if n != 1 || body["id"] != "id-1" {
			t.Fatalf("want id-1 and one publish, got %v (%d publishes)", body, n)
		}
		if last.Topic != tt.wantTopic || last.Msg != tt.wantMsg {
			t.Fatalf("published %+v, want topic %q msg %+v", last, tt.wantTopic, tt.wantMsg)
		}
		return
	}
	if n != 0 {
		t.Fatalf("refused request was published: %+v", last)
	}
	if !strings.Contains(body["error"], tt.wantErr) {
		t.Fatalf("error %q does not contain %q", body["error"], tt.wantErr)
	}
	switch tt.wantStatus {
	case 405:
		if rec.Header().Get("Allow") == "" || !strings.Contains(rec.Header().Get("Allow"), "POST") {
			t.Fatalf("405 without Allow: POST: %q", rec.Header().Get("Allow"))
		}
	case 503:
		if rec.Header().Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
	}
}

// TestPublishTimeout: a broker that does not answer gets --publish-timeout,
// and the request answers 503 with Retry-After by then.
func TestPublishTimeout(t *testing.T) {
	for name, hang := range map[string]func(error) error{
		"unavailable": func(err error) error { return fmt.Errorf("%w: %w", broker.ErrUnavailable, err) },
		"ctx error":   func(err error) error { return err },
	} {
		t.Run(name, func(t *testing.T) {
			fb := &fakeBroker{hang: hang}
			h, m := newTestPublish(t, fb, func(c *Config) { c.PublishTimeout = 200 * time.Millisecond })
			tt := pubCase{contentType: "application/x-www-form-urlencoded", body: "topic=a&data=x", wantStatus: 503, wantErr: "retry later"}
			start := time.Now()
			rec := doPublish(h, tt)
			took := time.Since(start)
			checkPublish(t, rec, fb, tt)
			if took < 200*time.Millisecond || took > 2*time.Second {
				t.Errorf("answered after %v with --publish-timeout=200ms", took)
			}
			if got := counterValue(t, m, "herald_publish_errors_total", "503"); got != 1 {
				t.Errorf("herald_publish_errors_total{code=503} = %v", got)
			}
		})
	}
}

func TestPublishAllowRemote(t *testing.T) {
	fb := &fakeBroker{}
	h, _ := newTestPublish(t, fb, func(c *Config) { c.PublishAllow = true })
	tt := pubCase{contentType: "application/x-www-form-urlencoded", body: "topic=a&data=x", remote: "203.0.113.9:4000",
		wantStatus: 200, wantTopic: "a", wantMsg: broker.Message{Data: "x"}}
	checkPublish(t, doPublish(h, tt), fb, tt)
}

func TestPublishTrustedOrigin(t *testing.T) {
	fb := &fakeBroker{}
	h, _ := newTestPublish(t, fb, func(c *Config) { c.CORSOrigins = []string{"https://app.example"} })
	tt := pubCase{contentType: "application/x-www-form-urlencoded", body: "topic=a&data=x",
		header:     map[string]string{"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"},
		wantStatus: 200, wantTopic: "a", wantMsg: broker.Message{Data: "x"}}
	rec := doPublish(h, tt)
	checkPublish(t, rec, fb, tt)
	if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Fatalf("Access-Control-Allow-Origin %q", got)
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1": true, "127.255.0.1:80": true, "[::1]:80": true, "[::ffff:127.0.0.1]:80": true,
		"10.0.0.1:1": false, "[::2]:1": false, "192.168.0.1:5": false, "garbage": false, "": false, "localhost:80": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
}

// counterValue reads a counter from the metrics exposition; label is the
// value of its only label, or "" for none.
func counterValue(t *testing.T, m *Metrics, name, label string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, metric := range mf.GetMetric() {
			if label != "" && (len(metric.GetLabel()) != 1 || metric.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := metric.GetCounter(); c != nil {
				return c.GetValue()
			}
			if g := metric.GetGauge(); g != nil {
				return g.GetValue()
			}
		}
	}
	return 0
}
