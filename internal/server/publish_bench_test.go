package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkPublishForm measures POST /publish (one form event, in-memory
// broker, no subscriber) in process: the handler's own cost, without the
// network.
func BenchmarkPublishForm(b *testing.B) {
	for _, c := range []struct{ name, ct, body, key string }{
		{"form", "application/x-www-form-urlencoded", "topic=bench&data=payload+of+about+sixty+four+bytes+......................", ""},
		{"form+key", "application/x-www-form-urlencoded", "topic=bench&data=payload+of+about+sixty+four+bytes+......................", "k"},
		{"json", "application/json", `{"topic":"bench","data":"payload of about sixty four bytes ......................"}`, ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			cfg := DefaultConfig()
			s, err := New(context.Background(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.broker.Close()
			h := s.Handler()
			req := httptest.NewRequest(http.MethodPost, "http://example.com/publish", nil)
			req.Header.Set("Content-Type", c.ct)
			req.RemoteAddr = "127.0.0.1:40000"
			rd := strings.NewReader(c.body)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				rd.Reset(c.body)
				r := req.Clone(req.Context())
				r.Body = http.NoBody
				r.Body = readCloser{rd}
				if c.key != "" {
					r.Header.Set("Idempotency-Key", c.key+string(rune('a'+i%26))+string(rune('a'+i/26%26)))
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }
