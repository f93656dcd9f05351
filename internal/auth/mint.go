package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token is what Mint puts into a token: the rights of the herald claim and
// the registered claims an Authorizer checks.
type Token struct {
	Subject   string   // sub; the principal of rate limits and logs
	Subscribe []string // patterns the holder may subscribe to
	Publish   []string // patterns the holder may publish to
	Admin     bool     // the holder may use the admin API
	Audience  string   // aud, when the server checks one
	Issuer    string   // iss, when the server checks one
	// IssuedAt is iat and nbf; zero means now.
	IssuedAt time.Time
	// TTL is how long the token is valid from IssuedAt (exp); it must be
	// positive.
	TTL time.Duration
}

// Mint signs t with an HMAC secret (HS256), as an operator's or a test's
// token for a server configured with the same secret. It encodes the
// claims Parse reads, so a minted token grants exactly t's patterns.
func Mint(secret []byte, t Token) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("auth: the HMAC secret is %d bytes; use at least %d random bytes", len(secret), MinSecretLen)
	}
	if t.TTL <= 0 {
		return "", errors.New("auth: a token needs a positive lifetime")
	}
	if len(t.Subscribe) == 0 && len(t.Publish) == 0 && !t.Admin {
		return "", errors.New("auth: a token without subscribe or publish patterns or admin grants nothing")
	}
	for _, list := range [][]string{t.Subscribe, t.Publish} {
		for _, p := range list {
			if err := ValidatePattern(p); err != nil {
				return "", fmt.Errorf("auth: %v", err)
			}
		}
	}
	now := t.IssuedAt
	if now.IsZero() {
		now = time.Now()
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   t.Subject,
			Issuer:    t.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(t.TTL)),
		},
		Herald: &heraldClaim{Publish: nonNil(t.Publish), Subscribe: nonNil(t.Subscribe), Admin: t.Admin},
	}
	if t.Audience != "" {
		c.Audience = jwt.ClaimStrings{t.Audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
