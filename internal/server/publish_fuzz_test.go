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
// /publish, single events and batches: it must never panic, must answer a
// known status with a JSON object, and must publish exactly the events it
// answers an id for.
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
		{"application/x-ndjson", "{\"topic\":\"a\",\"data\":\"1\"}\n\n{\"topic\":\"\"}\nnot json\n{\"topic\":\"b\",\"idempotency_key\":\"k\"}", "127.0.0.1:1"},
		{"application/json", `[{"topic":"a","data":"x"},7,{"topic":"a b"},{"topic":"c","event":"herald.x"}]`, "127.0.0.1:1"},
		{"application/json", ` [{"topic":"a","data":"x","idempotency_key":"k 1"}`, "127.0.0.1:1"},
		{"application/jsonl", "{}", "127.0.0.1:1"},
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
		published := after - before
		var out struct {
			ID      string
			Error   string
			Results []struct {
				ID     string
				Status int
				Error  string
			}
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("answer is not a JSON object: %q", rec.Body)
		}
		switch rec.Code {
		case 200, 207, 400, 403, 413, 415, 422, 500, 503:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body)
		}
		if out.Results == nil { // one event
			switch {
			case rec.Code == 207:
				t.Fatalf("207 without results: %s", rec.Body)
			case rec.Code == 200 && (published != 1 || out.ID == ""):
				t.Fatalf("200 without exactly one publish (%d) and its id: %s", published, rec.Body)
			case rec.Code != 200 && (published != 0 || out.Error == ""):
				t.Fatalf("status %d but %d published, or no error: %s", rec.Code, published, rec.Body)
			}
			return
		}
		ids := 0
		for i, r := range out.Results {
			if (r.ID != "") == (r.Status != 0 || r.Error != "") || r.ID == "" && (r.Status < 400 || r.Error == "") {
				t.Fatalf("result %d is neither an id nor a status and error: %+v", i, r)
			}
			if r.ID != "" {
				ids++
			}
		}
		switch {
		case ids != published:
			t.Fatalf("%d results with an id, %d events published", ids, published)
		case rec.Code == 200 && ids != len(out.Results):
			t.Fatalf("200 with failed events: %s", rec.Body)
		case rec.Code != 200 && rec.Code != 207 && ids != 0:
			t.Fatalf("status %d with published events: %s", rec.Code, rec.Body)
		case rec.Code == 207 && ids == len(out.Results):
			t.Fatalf("207 with every event published: %s", rec.Body)
		}
	})
}
