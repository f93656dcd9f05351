package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-sse/herald/pkg/broker/membroker"
	"github.com/herald-sse/herald/pkg/sse"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSA(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

func pemPublic(t testing.TB, pub any) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// rights builds a claim set with the herald claim.
func rights(pub, sub []string, extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"herald": map[string]any{"publish": pub, "subscribe": sub}}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func sign(t testing.TB, method jwt.SigningMethod, key any, c jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newAuth(t testing.TB, cfg Config) *Authorizer {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, topic string
		want           bool
	}{
		{"*", "anything", true},
		{"orders.*", "orders.1", true},
		{"orders.*", "orders.", true},
		{"orders.*", "orders", false},
		{"orders.*", "ordersx", false},
		{"orders", "orders", true},
		{"orders", "orders.1", false},
		{"a*", "a*", true},
		{"news", "News", false},
	} {
		if got := Match(tc.pattern, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.pattern, tc.topic, got)
		}
	}
}

func TestParse(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	hs := newAuth(t, Config{Secret: secret, Now: clock})
	rk := testRSA(t)
	rs := newAuth(t, Config{PublicKeyPEM: pemPublic(t, &rk.PublicKey), Now: clock})
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es := newAuth(t, Config{PublicKeyPEM: pemPublic(t, &ek.PublicKey), Now: clock})
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ed := newAuth(t, Config{PublicKeyPEM: pemPublic(t, edPub), Now: clock})
	aud := newAuth(t, Config{Secret: secret, Now: clock, Audience: "herald", Issuer: "https://idp"})

	ok := rights([]string{"orders.*"}, []string{"news"}, nil)
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	noneTok := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// An HS256 token whose "secret" is the RSA public key's PEM: the
	// classic algorithm-confusion attack on an RSA-configured verifier.
	confused := sign(t, jwt.SigningMethodHS256, pemPublic(t, &rk.PublicKey), ok)
	// A valid token with its header's alg rewritten to "none".
	valid := sign(t, jwt.SigningMethodHS256, secret, ok)
	parts := strings.Split(valid, ".")
	stripped := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	for _, tc := range []struct {
		name  string
		a     *Authorizer
		token string
		want  error // nil: accepted
	}{
		{"hs256", hs, valid, nil},
		{"hs384", hs, sign(t, jwt.SigningMethodHS384, secret, ok), nil},
		{"hs512", hs, sign(t, jwt.SigningMethodHS512, secret, ok), nil},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another secret of enough bytes!!"), ok), ErrInvalidToken},
		{"alg none", hs, noneTok(ok), ErrInvalidToken},
		{"alg none stripped signature", hs, stripped, ErrInvalidToken},
		{"alg none on rsa", rs, noneTok(ok), ErrInvalidToken},
		{"rs256", rs, sign(t, jwt.SigningMethodRS256, rk, ok), nil},
		{"ps256", rs, sign(t, jwt.SigningMethodPS256, rk, ok), nil},
		{"hs256 with the rsa public key (confusion)", rs, confused, ErrInvalidToken},
		{"rs256 on an hmac verifier", hs, sign(t, jwt.SigningMethodRS256, rk, ok), ErrInvalidToken},
		{"es256", es, sign(t, jwt.SigningMethodES256, ek, ok), nil},
		{"rs256 on an ecdsa verifier", es, sign(t, jwt.SigningMethodRS256, rk, ok), ErrInvalidToken},
		{"eddsa", ed, sign(t, jwt.SigningMethodEdDSA, edPriv, ok), nil},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"x"}, jwt.MapClaims{"exp": at(-time.Minute)})), ErrInvalidToken},
		{"expired within leeway", hs, sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"x"}, jwt.MapClaims{"exp": at(-10 * time.Second)})), nil},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"x"}, jwt.MapClaims{"nbf": at(time.Minute)})), ErrInvalidToken},
		{"nbf within leeway", hs, sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"x"}, jwt.MapClaims{"nbf": at(10 * time.Second)})), nil},
		{"no herald claim", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "x"}), ErrInvalidToken},
		{"herald claim not an object", hs, sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"herald": "all"}), ErrInvalidToken},
		{"bad pattern", hs, sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"a b"}, nil)), ErrInvalidToken},
		{"empty pattern", hs, sign(t, jwt.SigningMethodHS256, secret, rights([]string{""}, nil, nil)), ErrInvalidToken},
		{"garbage", hs, "not.a.token", ErrInvalidToken},
		{"empty", hs, "", ErrNoCredentials},
		{"audience and issuer", aud, sign(t, jwt.SigningMethodHS256, secret, rights(nil, nil, jwt.MapClaims{"aud": "herald", "iss": "https://idp"})), nil},
		{"wrong audience", aud, sign(t, jwt.SigningMethodHS256, secret, rights(nil, nil, jwt.MapClaims{"aud": "other", "iss": "https://idp"})), ErrInvalidToken},
		{"missing issuer", aud, sign(t, jwt.SigningMethodHS256, secret, rights(nil, nil, jwt.MapClaims{"aud": "herald"})), ErrInvalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := tc.a.Parse(tc.token)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if g == nil || g.Principal == "" {
					t.Fatalf("grant %+v", g)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if Status(err) != http.StatusUnauthorized {
				t.Fatalf("status %d", Status(err))
			}
		})
	}
}

func TestGrantRights(t *testing.T) {
	a := newAuth(t, Config{Secret: secret})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	g, err := a.Parse(sign(t, jwt.SigningMethodHS256, secret,
		rights([]string{"orders.*"}, []string{"news", "chat.*"}, jwt.MapClaims{"sub": "alice", "exp": exp.Unix()})))
	if err != nil {
		t.Fatal(err)
	}
	if g.Principal != "sub:alice" {
		t.Errorf("principal %q", g.Principal)
	}
	if want := exp.Add(DefaultLeeway); !g.Expires.Equal(want) {
		t.Errorf("expires %v, want exp+leeway %v", g.Expires, want)
	}
	for _, tc := range []struct {
		action Action
		topic  string
		want   bool
	}{
		{Publish, "orders.1", true},
		{Publish, "news", false},
		{Subscribe, "news", true},
		{Subscribe, "chat.room", true},
		{Subscribe, "orders.1", false},
	} {
		if got := g.Allows(tc.action, tc.topic); got != tc.want {
			t.Errorf("%v %q: %v", tc.action, tc.topic, got)
		}
	}
}

func TestNewRejectsWeakOrWrongKeys(t *testing.T) {
	rk := testRSA(t)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	privDER := x509.MarshalPKCS1PrivateKey(rk)
	for name, cfg := range map[string]Config{
		"short secret":    {Secret: []byte("short")},
		"both":            {Secret: secret, PublicKeyPEM: pemPublic(t, &rk.PublicKey)},
		"not pem":         {PublicKeyPEM: []byte("hello")},
		"private key":     {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: privDER})},
		"small rsa":       {PublicKeyPEM: pemPublic(t, &small.PublicKey)},
		"short api key":   {APIKey: "abc"},
		"pem not a key":   {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})},
		"hmac and secret": {Secret: []byte{}, PublicKeyPEM: []byte("-----BEGIN X-----\n-----END X-----\n")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// PKCS#1 "RSA PUBLIC KEY" works too.
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rk.PublicKey)})
	a := newAuth(t, Config{PublicKeyPEM: pkcs1})
	if got := strings.Join(a.Algorithms(), ","); got != "RS256,RS384,RS512,PS256,PS384,PS512" {
		t.Errorf("algorithms %s", got)
	}
}

func TestPublishCredentials(t *testing.T) {
	const key = "service-key-0123456789"
	a := newAuth(t, Config{Secret: secret, APIKey: key})
	tok := sign(t, jwt.SigningMethodHS256, secret, rights([]string{"orders.*"}, []string{"*"}, nil))
	req := func(hdr, cookie string) *http.Request {
		r := httptest.NewRequest("POST", "/publish?access_token="+tok, nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: CookieName, Value: cookie})
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		r      *http.Request
		topic  string
		status int // 0: allowed
	}{
		{"api key", req("Bearer "+key, ""), "anything", 0},
		{"api key lower-case scheme", req("bearer "+key, ""), "anything", 0},
		{"wrong api key", req("Bearer "+key+"x", ""), "anything", 401},
		{"token", req("Bearer "+tok, ""), "orders.7", 0},
		{"token without the right", req("Bearer "+tok, ""), "news", 403},
		{"basic scheme", req("Basic "+key, ""), "orders.7", 401},
		{"cookie is not read for publish", req("", tok), "orders.7", 401},
		{"query is not read for publish", req("", ""), "orders.7", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.AuthorizePublish(tc.r, tc.topic)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if Status(err) != tc.status {
				t.Fatalf("status %d (%v), want %d", Status(err), err, tc.status)
			}
			if Challenge(err) == "" {
				t.Fatal("no challenge")
			}
		})
	}
	// Only the API key: tokens are not accepted, but the key is.
	ka := newAuth(t, Config{APIKey: key})
	if _, err := ka.AuthorizePublish(req("Bearer "+key, ""), "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := ka.AuthorizePublish(req("Bearer "+tok, ""), "x"); Status(err) != 401 {
		t.Fatalf("token with only an API key configured: %v", err)
	}
	if ka.SubscribeProtected() || !ka.PublishProtected() {
		t.Fatal("API key alone must protect publish only")
	}
}

// The hook over a real TopicHandler: token places, statuses, headers, and
// the stream ending at the token's expiry.
func TestOnConnect(t *testing.T) {
	b := membroker.New(membroker.Config{HistorySize: 10})
	defer b.Close()
	a := newAuth(t, Config{Secret: secret, Leeway: -1})
	h := &sse.TopicHandler{Broker: b, Heartbeat: -1, OnConnect: a.OnConnect(nil)}
	srv := httptest.NewServer(h)
	defer srv.Close()
	tok := sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"news", "chat.*"}, nil))

	get := func(query string, hdr map[string]string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/?"+query, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == 200 {
			resp.Body.Close()
			return resp, ""
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	for _, tc := range []struct {
		name   string
		query  string
		hdr    map[string]string
		status int
	}{
		{"bearer", "topic=news", map[string]string{"Authorization": "Bearer " + tok}, 200},
		{"cookie", "topic=news&topic=chat.1", map[string]string{"Cookie": CookieName + "=" + tok}, 200},
		{"query", "topic=chat.x&" + QueryParam + "=" + tok, nil, 200},
		{"missing", "topic=news", nil, 401},
		{"invalid", "topic=news", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"one topic not covered", "topic=news&topic=secret", map[string]string{"Authorization": "Bearer " + tok}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(tc.query, tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 200 {
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
				}
				if strings.Contains(body, "auth:") || body == "" {
					t.Errorf("body %q", body)
				}
			}
		})
	}

	// A token expiring in a second: the stream ends then.
	short := sign(t, jwt.SigningMethodHS256, secret, rights(nil, []string{"news"}, jwt.MapClaims{"exp": time.Now().Add(1500 * time.Millisecond).Unix()}))
	req, _ := http.NewRequest("GET", srv.URL+"/?topic=news", nil)
	req.Header.Set("Authorization", "Bearer "+short)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10s after its token expired")
	}
}

func TestAnonymousSubscribe(t *testing.T) {
	a := newAuth(t, Config{Secret: secret, AnonymousSubscribe: true})
	r := httptest.NewRequest("GET", "/?topic=x", nil)
	if status, _, err := a.OnConnect(nil)(r); status != 200 || err != nil {
		t.Fatalf("%d %v", status, err)
	}
	if a.SubscribeProtected() || !a.PublishProtected() {
		t.Fatal("anonymous subscribe must leave publish protected only")
	}
}
