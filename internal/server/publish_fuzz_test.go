package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPublish feeds arbitrary bodies, content types and peers to POST
// /publish: it must never panic, must answer a known status with a JSON
// object, and must publish exactly when it answers 200.
func FuzzPublish(f *testing.F) {
	seeds := []struct{ ct, body, remote string }{
		{"application/x-www-form-urlencoded", "topic=news&data=hello", "127.0.0.1:1"},
		{"application/x-www-form-urlencoded", "topic=news&event=x%0Ay&data=hello", "127.0.0.1:1"},
		{"application/json", `{"topic":"news","event":"e","data":"x"}`, "[::1]:1"},
		{"application/json; charset=utf-8", `{"topic":"a","data":"x"} {}`, "127.0.0.1:1"},
		{"application/json", `{"topic":"a","data":1e999}`, "127.0.0.1:1"},
		{"multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"topic\"\r\n\r\nt\r\n--X--\r\n", "127.0.0.1:1"},
		{"multipart/form-data; boundary=X", "--X\r\nContent-Disposition: form-data; name=\"data\"; filename=\"f\"\r\n\r\nt\r\n--X--\r\n", "127.0.0.1:1"},
		{"text/plain", "hello", "127.0.0.1:1"},
		{"", "", "10.1.2.3:4"},
		{";;", "\x00\xff", "garbage"},
	}
	for _, s := range seeds {
		f.Add(s.ct, s.body, s.remote)
	}
	fb := &fakeBroker{}
	cfg := DefaultConfig()
	cfg.MaxEventBytes, cfg.MaxBodyBytes = 100, 1000
	s, err := New(context.Background(), cfg, Options{Broker: fb, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, ct, body, remote string) {
		req := httptest.NewRequest(http.MethodPost, "http://example.com/publish", strings.NewReader(body))
		if ct != "" {
			req.Header["Content-Type"] = []string{ct}
		}
		req.RemoteAddr = remote
		_, before := fb.last()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		_, after := fb.last()
		switch rec.Code {
		case 200:
			if after != before+1 {
				t.Fatalf("200 without exactly one publish (%d -> %d)", before, after)
			}
		case 400, 403, 413, 415, 500, 503:
			if after != before {
				t.Fatalf("status %d but the event was published", rec.Code)
			}
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body)
		}
		var out map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("answer is not a JSON object: %q", rec.Body)
		}
	})
}
