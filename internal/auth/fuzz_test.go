package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary strings as tokens: Parse must never panic and
// must refuse anything not signed with the key.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "....", "Bearer x", "\x00\xff.\xfe.", "eyJ.eyJ.sig"} {
		f.Add(s)
	}
	a := newAuth(f, Config{Secret: secret})
	f.Fuzz(func(t *testing.T, token string) {
		g, err := a.Parse(token)
		if err == nil {
			t.Fatalf("accepted an unsigned token %q: %+v", token, g)
		}
		if s := Status(err); s != 401 {
			t.Fatalf("status %d for %v", s, err)
		}
		// The extraction paths must not panic either.
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Authorization"] = []string{token}
		r.Header["Cookie"] = []string{token}
		_, _ = SubscribeToken(r)
		_, _ = a.AuthorizePublish(r, "t")
	})
}

// FuzzSignedClaims signs arbitrary header and payload JSON with the real
// key, so the claim parsing and validation see anything an issuer could
// produce: they must never panic, only HS256 (what was signed) may pass,
// and an accepted grant must agree with Match.
func FuzzSignedClaims(f *testing.F) {
	f.Add(`{"alg":"HS256","typ":"JWT"}`, `{"herald":{"publish":["a.*"],"subscribe":["*"]}}`, "a.b")
	f.Add(`{"alg":"none"}`, `{"herald":{"publish":["*"]}}`, "x")
	f.Add(`{"alg":"HS512"}`, `{"herald":{}}`, "x")
	f.Add(`{"alg":"RS256"}`, `{"herald":{"subscribe":["x"]},"exp":1}`, "x")
	f.Add(`{"alg":"HS256"}`, `{"herald":{"subscribe":[""]},"nbf":1e300}`, "x")
	f.Add(`{"alg":"HS256"}`, `{"herald":{"subscribe":"x"},"aud":[1]}`, "x")
	f.Add(`{"alg":"HS256"}`, `{"herald":null,"exp":"soon"}`, "x")
	f.Add(`{"alg":"HS256","kid":"../../x"}`, `[]`, "")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newAuth(f, Config{Secret: secret, Now: func() time.Time { return now }})
	f.Fuzz(func(t *testing.T, header, payload, topic string) {
		enc := base64.RawURLEncoding
		signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
		mac := hmac.New(sha256.New, secret)
		mac.Write([]byte(signing))
		token := signing + "." + enc.EncodeToString(mac.Sum(nil))
		g, err := a.Parse(token)
		if err != nil {
			if Status(err) != 401 {
				t.Fatalf("status %d for %v", Status(err), err)
			}
			return
		}
		var h struct{ Alg string }
		if json.Unmarshal([]byte(header), &h) != nil || h.Alg != "HS256" {
			t.Fatalf("accepted header %q", header)
		}
		var c struct {
			Herald struct{ Publish, Subscribe []string }
		}
		if err := json.Unmarshal([]byte(payload), &c); err != nil {
			t.Fatalf("accepted payload %q that does not decode: %v", payload, err)
		}
		want := false
		for _, p := range c.Herald.Subscribe {
			if ValidatePattern(p) != nil {
				t.Fatalf("accepted bad pattern %q", p)
			}
			want = want || Match(p, topic)
		}
		if got := g.Allows(Subscribe, topic); got != want {
			t.Fatalf("Allows(subscribe, %q) = %v, claim says %v", topic, got, want)
		}
	})
}
