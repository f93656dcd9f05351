package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzPublishAuth feeds arbitrary credentials, cookies, origins, content
// types and bodies to POST /publish with authentication, CORS and a rate
// limit on: it must never panic, must answer a known status with a JSON
// object, must publish exactly when it answers 200, must never publish
// without a real credential, and must challenge every 401.
func FuzzPublishAuth(f *testing.F) {
	tok := token(f, []string{"orders.*"}, nil, time.Time{})
	form := "application/x-www-form-urlencoded"
	for _, s := range []struct{ authz, cookie, origin, ct, body string }{
		{"Bearer " + testAPIKey, "", "", form, "topic=a&data=x"},
		{"Bearer " + tok, "", "", form, "topic=orders.1&data=x"},
		{"Bearer " + tok, "", "", form, "topic=news&data=x"},
		{"bearer  " + tok + " ", "", "https://app.example", "application/json", `{"topic":"orders.2","data":"x"}`},
		{"Basic Zm9vOmJhcg==", "", "", form, "topic=a&data=x"},
		{"Bearer", "herald_token=" + tok, "", form, "topic=orders.1&data=x"},
		{"Bearer " + testAPIKey + "\x00", "", "https://evil.example", form, "topic=a&data=x"},
		{"Bearer eyJhbGciOiJub25lIn0.eyJoZXJhbGQiOnsicHVibGlzaCI6WyIqIl19fQ.", "", "", form, "topic=a&data=x"},
		{"", "", "null", "", ""},
	} {
		f.Add(s.authz, s.cookie, s.origin, s.ct, s.body)
	}
	fb := &fakeBroker{}
	cfg := DefaultConfig()
	cfg.JWTSecret, cfg.APIKey = testSecret, testAPIKey
	cfg.CORSOrigins = []string{"https://app.example"}
	cfg.PublishRate, cfg.PublishBurst = 1e6, 1000
	cfg.MaxEventBytes, cfg.MaxBodyBytes = 100, 1000
	s, err := New(context.Background(), cfg, Options{Broker: fb, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, authz, cookie, origin, ct, body string) {
		req := httptest.NewRequest(http.MethodPost, "http://example.com/publish", strings.NewReader(body))
		for k, v := range map[string]string{"Authorization": authz, "Cookie": cookie, "Origin": origin, "Content-Type": ct} {
			if v != "" {
				req.Header[k] = []string{v}
			}
		}
		req.RemoteAddr = "127.0.0.1:1"
		_, before := fb.last()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		_, after := fb.last()
		switch rec.Code {
		case 200:
			if after != before+1 {
				t.Fatalf("200 without exactly one publish (%d -> %d)", before, after)
			}
			if !strings.Contains(authz, testAPIKey) && !strings.Contains(authz, tok) {
				t.Fatalf("published without a credential: Authorization %q", authz)
			}
		case 401:
			if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a challenge")
			}
			fallthrough
		case 400, 403, 413, 415, 429, 500, 503:
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
