package server

import (
	"net/http"
	"strings"
	"testing"
)

// CORS over the whole route table: listed origins get their own origin and
// credentials, "*" gets "*" without credentials, unlisted origins get no
// CORS header at all; preflights are answered for POST /publish and for
// GET /events with Last-Event-ID.
func TestCORSMatrix(t *testing.T) {
	listed := newTestServer(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example", "http://localhost:3000"} }).Handler()
	mixed := newTestServer(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example", "*"} }).Handler()
	star := newTestServer(t, func(c *Config) { c.CORSOrigins = []string{"*"} }).Handler()
	off := newTestServer(t, nil).Handler()
	withAuthSrv := newTestServer(t, func(c *Config) { withAuth(c); c.CORSOrigins = []string{"https://app.example"} }).Handler()

	preEvents := map[string]string{"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "last-event-id"}
	prePublish := map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, authorization"}
	with := func(m map[string]string, origin string) map[string]string {
		out := map[string]string{"Origin": origin}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		h           http.Handler
		method      string
		path        string
		hdr         map[string]string
		status      int    // 0: any
		allowOrigin string // "" means no Access-Control-Allow-Origin
		credentials bool
	}{
		{"events preflight, listed", listed, "OPTIONS", "/events?topic=a", with(preEvents, "https://app.example"), 204, "https://app.example", true},
		{"publish preflight, listed", listed, "OPTIONS", "/publish", with(prePublish, "http://localhost:3000"), 204, "http://localhost:3000", true},
		{"events preflight, unlisted", listed, "OPTIONS", "/events?topic=a", with(preEvents, "https://evil.example"), 0, "", false},
		{"publish preflight, unlisted", listed, "OPTIONS", "/publish", with(prePublish, "https://evil.example"), 0, "", false},
		{"publish, unlisted", listed, "POST", "/publish", map[string]string{"Origin": "https://evil.example"}, 0, "", false},
		{"health, unlisted", listed, "GET", "/healthz", map[string]string{"Origin": "https://evil.example"}, 200, "", false},
		{"scheme matters", listed, "OPTIONS", "/publish", with(prePublish, "http://app.example"), 0, "", false},
		{"port matters", listed, "OPTIONS", "/publish", with(prePublish, "http://localhost:3001"), 0, "", false},
		{"null origin", listed, "OPTIONS", "/publish", with(prePublish, "null"), 0, "", false},
		{"star preflight", star, "OPTIONS", "/events?topic=a", with(preEvents, "https://any.example"), 204, "*", false},
		{"star publish preflight", star, "OPTIONS", "/publish", with(prePublish, "https://any.example"), 204, "*", false},
		{"mixed: listed gets credentials", mixed, "OPTIONS", "/publish", with(prePublish, "https://app.example"), 204, "https://app.example", true},
		{"mixed: others get star", mixed, "OPTIONS", "/publish", with(prePublish, "https://other.example"), 204, "*", false},
		{"off", off, "OPTIONS", "/events?topic=a", with(preEvents, "https://app.example"), 0, "", false},
		// A refused request from a listed origin still carries CORS headers,
		// so the page can read the 401.
		{"401 readable by a listed origin", withAuthSrv, "GET", "/events?topic=a", map[string]string{"Origin": "https://app.example"}, 401, "https://app.example", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, tc.h, tc.method, tc.path, tc.hdr)
			h := rec.Header()
			if tc.status != 0 && rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
			}
			if got := h.Get("Access-Control-Allow-Credentials") == "true"; got != tc.credentials {
				t.Fatalf("credentials %v, want %v", got, tc.credentials)
			}
			if tc.allowOrigin == "" {
				for k := range h {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Fatalf("CORS header %s for an unlisted origin", k)
					}
				}
			}
			if rec.Code == 204 {
				if tc.hdr["Access-Control-Request-Method"] == "GET" && !containsFold(h.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
					t.Errorf("preflight does not allow Last-Event-ID: %v", h)
				}
				if tc.hdr["Access-Control-Request-Method"] == "POST" && !containsFold(h.Get("Access-Control-Allow-Headers"), "Authorization") {
					t.Errorf("preflight does not allow Authorization: %v", h)
				}
			}
		})
	}
}

func containsFold(list, want string) bool {
	for _, v := range strings.Split(list, ",") {
		if strings.EqualFold(strings.TrimSpace(v), want) {
			return true
		}
	}
	return false
}
