package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMint(t *testing.T) {
	secret := []byte(strings.Repeat("k", MinSecretLen))
	now := time.Unix(1_800_000_000, 0)
	tok, err := Mint(secret, Token{
		Subject: "u42", Subscribe: []string{"news.*"}, Publish: []string{"chat.7"},
		Audience: "app", Issuer: "ops", IssuedAt: now, TTL: 15 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The header pins HS256.
	head, _, _ := strings.Cut(tok, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil || h["alg"] != "HS256" {
		t.Fatalf("header %s: want alg HS256 (%v)", raw, err)
	}

	at := func(ts time.Time) func() time.Time { return func() time.Time { return ts } }
	a := newAuth(t, Config{Secret: secret, Audience: "app", Issuer: "ops", Leeway: -1, Now: at(now.Add(time.Minute))})
	g, err := a.Parse(tok)
	if err != nil {
		t.Fatalf("the verifier refuses a minted token: %v", err)
	}
	if g.Principal != "sub:u42" {
		t.Errorf("principal %q, want sub:u42", g.Principal)
	}
	if want := now.Add(15 * time.Minute); !g.Expires.Equal(want) {
		t.Errorf("expires %v, want %v", g.Expires, want)
	}
	for _, c := range []struct {
		action Action
		topic  string
		want   bool
	}{
		{Subscribe, "news.eu", true},
		{Subscribe, "news", false},
		{Subscribe, "chat.7", false},
		{Publish, "chat.7", true},
		{Publish, "chat.70", false},
		{Publish, "news.eu", false},
	} {
		if got := g.Allows(c.action, c.topic); got != c.want {
			t.Errorf("%v %q: allowed %v, want %v", c.action, c.topic, got, c.want)
		}
	}

	// exp, aud and iss are real: another audience, issuer or a later clock refuse it.
	for name, cfg := range map[string]Config{
		"expired":        {Secret: secret, Leeway: -1, Now: at(now.Add(16 * time.Minute))},
		"not yet":        {Secret: secret, Leeway: -1, Now: at(now.Add(-time.Minute))},
		"other audience": {Secret: secret, Audience: "other", Now: at(now)},
		"other issuer":   {Secret: secret, Issuer: "other", Now: at(now)},
		"other secret":   {Secret: []byte(strings.Repeat("x", MinSecretLen)), Now: at(now)},
	} {
		if _, err := newAuth(t, cfg).Parse(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: Parse = %v, want ErrInvalidToken", name, err)
		}
	}

	// Only subscribe rights: publishing nowhere.
	sub, err := Mint(secret, Token{Subscribe: []string{"*"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	g, err = newAuth(t, Config{Secret: secret}).Parse(sub)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Allows(Subscribe, "anything") || g.Allows(Publish, "anything") {
		t.Error("a subscribe-only token: want subscribe everywhere, publish nowhere")
	}
}

func TestMintRefuses(t *testing.T) {
	secret := []byte(strings.Repeat("k", MinSecretLen))
	for name, c := range map[string]struct {
		secret []byte
		tok    Token
	}{
		"short secret": {secret[:MinSecretLen-1], Token{Subscribe: []string{"a"}, TTL: time.Minute}},
		"no lifetime":  {secret, Token{Subscribe: []string{"a"}}},
		"no rights":    {secret, Token{TTL: time.Minute}},
		"bad pattern":  {secret, Token{Publish: []string{"with space"}, TTL: time.Minute}},
	} {
		if tok, err := Mint(c.secret, c.tok); err == nil {
			t.Errorf("%s: minted %q, want an error", name, tok)
		}
	}
}
