// Package auth is herald's authorization: JSON Web Tokens that carry
// topic-level publish and subscribe rights, and a static API key for
// service-to-service publishing.
//
// It sits at the two doors of the data path: POST /publish asks
// Authorizer.Publish before the broker sees an event, and GET /events runs
// Authorizer.OnConnect, an sse.OnConnect hook, before the stream
// subscribes. pkg/sse users can plug the same hook, or their own, into a
// TopicHandler.
//
// A token's rights are the claim
//
//	"herald": {"publish": ["orders.*"], "subscribe": ["orders.*", "news"]}
//
// where each entry is a pattern: an exact topic, a prefix ending in "*"
// ("orders.*" matches every topic starting with "orders."), or "*" for
// every topic. The registered claims exp and nbf are honoured with a
// clock-skew allowance (Config.Leeway); aud and iss are checked when
// configured. The signing algorithm is pinned to the configured key: an
// HMAC secret accepts HS256/384/512 only, an RSA key RS* and PS*, an ECDSA
// key the ES* of its curve, an Ed25519 key EdDSA; "alg": "none" is never
// accepted.
package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Names of the places a token is read from; public contract.
const (
	// ClaimName is the JWT claim holding a token's topic rights.
	ClaimName = "herald"
	// CookieName is the cookie a browser EventSource (withCredentials)
	// sends the token in.
	CookieName = "herald_token"
	// QueryParam is the query parameter that may carry a subscriber's
	// token; the least safe place (URLs end up in logs and histories).
	QueryParam = "access_token"
)

// DefaultLeeway is the clock-skew allowance on exp and nbf.
const DefaultLeeway = 30 * time.Second

// MinSecretLen is the shortest HMAC secret accepted, in bytes: shorter
// keys can be brute-forced offline from a single token.
const MinSecretLen = 32

// Errors. Status maps them to HTTP status codes.
var (
	// ErrNoCredentials: the request carries no token (401).
	ErrNoCredentials = errors.New("auth: missing token")
	// ErrInvalidToken: the token is malformed, badly signed, expired, not
	// yet valid or for another audience or issuer (401).
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrForbidden: the token is valid but does not grant the action on
	// the topic (403).
	ErrForbidden = errors.New("auth: forbidden")
)

// Config configures an Authorizer. Set Secret or PublicKeyPEM to verify
// tokens; APIKey may be set with or without them.
type Config struct {
	// Secret is the HMAC key of HS256/HS384/HS512 tokens, at least
	// MinSecretLen bytes.
	Secret []byte
	// PublicKeyPEM is a PEM public key (PKIX "PUBLIC KEY", PKCS#1 "RSA
	// PUBLIC KEY" or a "CERTIFICATE") of RS*/PS* (RSA), ES* (ECDSA; the
	// curve picks the one algorithm) or EdDSA (Ed25519) tokens. Exclusive
	// with Secret.
	PublicKeyPEM []byte
	// Leeway is the clock-skew allowance on exp and nbf. 0 means
	// DefaultLeeway; negative means none.
	Leeway time.Duration
	// Audience, if set, must be one of the token's aud values.
	Audience string
	// Issuer, if set, must be the token's iss.
	Issuer string
	// APIKey, if set, is a static key that grants publishing to every
	// topic when sent as "Authorization: Bearer <key>". It never grants
	// subscribing.
	APIKey string
	// AdminKey, if set, is a static key that grants the admin API (the
	// cluster view, the status stream) when sent as "Authorization: Bearer
	// <key>". It grants neither publishing nor subscribing.
	AdminKey string
	// AnonymousSubscribe lets subscribers in without a token even when
	// tokens are configured; OnConnect then accepts every request.
	AnonymousSubscribe bool
	// Now is the clock; nil means time.Now. For tests.
	Now func() time.Time
}

// Action is what a grant is checked for.
type Action int

const (
	// Publish is POST /publish on a topic.
	Publish Action = iota
	// Subscribe is following a topic on GET /events.
	Subscribe
)

func (a Action) String() string {
	if a == Publish {
		return "publishing"
	}
	return "subscribing"
}

// Grant is what a verified credential allows.
type Grant struct {
	// Principal identifies the holder for rate limits and logs: "key" for
	// the API key, "sub:<subject>" for a token with a subject, otherwise
	// "token:<hash>" of the token.
	Principal string
	// Expires is when the credential stops being valid, leeway included;
	// zero if never.
	Expires time.Time

	all       bool // the API key: publish anywhere
	admin     bool // the admin key, or a token whose herald claim has "admin": true
	publish   []string
	subscribe []string
}

// Allows reports whether the grant permits action on topic.
func (g *Grant) Allows(action Action, topic string) bool {
	if g == nil {
		return false
	}
	if action == Publish && g.all {
		return true
	}
	patterns := g.subscribe
	if action == Publish {
		patterns = g.publish
	}
	for _, p := range patterns {
		if Match(p, topic) {
			return true
		}
	}
	return false
}

// Match reports whether pattern covers topic: "*" covers every topic, a
// pattern ending in "*" every topic starting with what precedes it, any
// other pattern only the topic equal to it.
func Match(pattern, topic string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(topic, prefix)
	}
	return pattern == topic
}

// ValidatePattern checks a claim entry: "*", or 1-256 bytes of printable
// ASCII without spaces (a topic, or a prefix followed by "*").
func ValidatePattern(p string) error {
	if p == "" || len(p) > 256 {
		return fmt.Errorf("pattern %q must be 1-256 bytes", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("pattern has byte 0x%02x at offset %d; allowed are printable ASCII characters without spaces", c, i)
		}
	}
	return nil
}

// Authorizer verifies credentials and checks grants. Create it with New;
// it is safe for concurrent use.
type Authorizer struct {
	cfg     Config
	key     any // verification key; nil without tokens
	methods []string
	parser  *jwt.Parser
	leeway  time.Duration
	apiKey  []byte
	admKey  []byte
}

// New checks cfg and returns its Authorizer.
func New(cfg Config) (*Authorizer, error) {
	a := &Authorizer{cfg: cfg, leeway: cfg.Leeway}
	if a.leeway == 0 {
		a.leeway = DefaultLeeway
	} else if a.leeway < 0 {
		a.leeway = 0
	}
	switch {
	case len(cfg.Secret) > 0 && len(cfg.PublicKeyPEM) > 0:
		return nil, errors.New("auth: set an HMAC secret or a public key, not both")
	case len(cfg.Secret) > 0:
		if len(cfg.Secret) < MinSecretLen {
			return nil, fmt.Errorf("auth: the HMAC secret is %d bytes; use at least %d random bytes", len(cfg.Secret), MinSecretLen)
		}
		a.key = cfg.Secret
		a.methods = []string{"HS256", "HS384", "HS512"}
	case len(cfg.PublicKeyPEM) > 0:
		key, methods, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, err
		}
		a.key, a.methods = key, methods
	}
	if cfg.APIKey != "" {
		if len(cfg.APIKey) < 16 {
			return nil, fmt.Errorf("auth: the API key is %d bytes; use at least 16 random bytes", len(cfg.APIKey))
		}
		a.apiKey = []byte(cfg.APIKey)
	}
	if cfg.AdminKey != "" {
		if len(cfg.AdminKey) < 16 {
			return nil, fmt.Errorf("auth: the admin key is %d bytes; use at least 16 random bytes", len(cfg.AdminKey))
		}
		if cfg.AdminKey == cfg.APIKey {
			return nil, errors.New("auth: the admin key must differ from the API key")
		}
		a.admKey = []byte(cfg.AdminKey)
	}
	if a.key != nil {
		opts := []jwt.ParserOption{
			jwt.WithValidMethods(a.methods),
			jwt.WithLeeway(a.leeway),
		}
		if cfg.Audience != "" {
			opts = append(opts, jwt.WithAudience(cfg.Audience))
		}
		if cfg.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(cfg.Issuer))
		}
		if cfg.Now != nil {
			opts = append(opts, jwt.WithTimeFunc(cfg.Now))
		}
		a.parser = jwt.NewParser(opts...)
	}
	return a, nil
}

// parsePublicKey reads a PEM key and returns the algorithms it may verify.
func parsePublicKey(data []byte) (any, []string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, errors.New("auth: the public key file holds no PEM block")
	}
	if strings.Contains(block.Type, "PRIVATE") {
		return nil, nil, errors.New("auth: the key file holds a private key; give herald the public key only")
	}
	if k, err := jwt.ParseRSAPublicKeyFromPEM(data); err == nil {
		if k.N.BitLen() < 2048 {
			return nil, nil, fmt.Errorf("auth: the RSA key has %d bits; use at least 2048", k.N.BitLen())
		}
		return k, []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(data); err == nil {
		switch k.Curve {
		case elliptic.P256():
			return k, []string{"ES256"}, nil
		case elliptic.P384():
			return k, []string{"ES384"}, nil
		case elliptic.P521():
			return k, []string{"ES512"}, nil
		}
		return nil, nil, fmt.Errorf("auth: unsupported ECDSA curve %s", k.Curve.Params().Name)
	}
	if k, err := jwt.ParseEdPublicKeyFromPEM(data); err == nil {
		return k, []string{"EdDSA"}, nil
	}
	return nil, nil, fmt.Errorf("auth: the PEM block %q is not an RSA, ECDSA or Ed25519 public key", block.Type)
}

// Tokens reports whether tokens are configured (a secret or a public key).
func (a *Authorizer) Tokens() bool { return a != nil && a.key != nil }

// APIKey reports whether the static API key is configured.
func (a *Authorizer) APIKey() bool { return a != nil && a.apiKey != nil }

// PublishProtected reports whether publishing needs a credential.
func (a *Authorizer) PublishProtected() bool { return a.Tokens() || a.APIKey() }

// SubscribeProtected reports whether subscribing needs a token.
func (a *Authorizer) SubscribeProtected() bool { return a.Tokens() && !a.cfg.AnonymousSubscribe }

// Algorithms returns the accepted signing algorithms (none without tokens).
func (a *Authorizer) Algorithms() []string { return append([]string(nil), a.methods...) }

// claims is the token's payload.
type claims struct {
	jwt.RegisteredClaims
	Herald *heraldClaim `json:"herald"`
}

type heraldClaim struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	// Admin grants the admin API (GET /api/..., the status stream).
	Admin bool `json:"admin,omitempty"`
}

// Parse verifies a token and returns its grant. Errors wrap
// ErrInvalidToken (or ErrNoCredentials for an empty token without tokens
// configured) and say why in words safe to show the client.
func (a *Authorizer) Parse(token string) (*Grant, error) {
	if !a.Tokens() {
		return nil, fmt.Errorf("%w: tokens are not accepted by this server", ErrInvalidToken)
	}
	if token == "" {
		return nil, ErrNoCredentials
	}
	var c claims
	if _, err := a.parser.ParseWithClaims(token, &c, a.keyFunc); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalidToken, reason(err))
	}
	if c.Herald == nil {
		return nil, fmt.Errorf("%w: no %q claim", ErrInvalidToken, ClaimName)
	}
	for _, list := range [][]string{c.Herald.Publish, c.Herald.Subscribe} {
		for _, p := range list {
			if err := ValidatePattern(p); err != nil {
				return nil, fmt.Errorf("%w: %q claim: %v", ErrInvalidToken, ClaimName, err)
			}
		}
	}
	g := &Grant{publish: c.Herald.Publish, subscribe: c.Herald.Subscribe, admin: c.Herald.Admin}
	if c.ExpiresAt != nil {
		g.Expires = c.ExpiresAt.Add(a.leeway)
	}
	if c.Subject != "" {
		g.Principal = "sub:" + c.Subject
	} else {
		sum := sha256.Sum256([]byte(token))
		g.Principal = "token:" + hex.EncodeToString(sum[:8])
	}
	return g, nil
}

// keyFunc returns the configured key for any method the parser let
// through (WithValidMethods already pinned the algorithm); the type check
// is a second guard against algorithm confusion.
func (a *Authorizer) keyFunc(t *jwt.Token) (any, error) {
	switch a.key.(type) {
	case []byte:
		if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
			return a.key, nil
		}
	case *rsa.PublicKey:
		switch t.Method.(type) {
		case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
			return a.key, nil
		}
	case *ecdsa.PublicKey:
		if _, ok := t.Method.(*jwt.SigningMethodECDSA); ok {
			return a.key, nil
		}
	case ed25519.PublicKey:
		if _, ok := t.Method.(*jwt.SigningMethodEd25519); ok {
			return a.key, nil
		}
	}
	return nil, errors.New("signing method does not fit the key")
}

// reason turns a jwt error into a short explanation for the client.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token is for another audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token is from another issuer"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature does not verify or the algorithm is not accepted"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "token is malformed"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "token claims are invalid"
	}
	return "token is not acceptable"
}

// bearer returns the token of an "Authorization: Bearer" header: ok is
// false without the header, and err is set for another scheme.
func bearer(r *http.Request) (token string, ok bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, nil
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true, fmt.Errorf("%w: use the Authorization scheme Bearer", ErrInvalidToken)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", true, fmt.Errorf("%w: empty bearer token", ErrInvalidToken)
	}
	return tok, true, nil
}

// PublishGrant verifies a publisher's credential: "Authorization: Bearer"
// with the API key or a token (cookies and the query are not read, so a
// browser cannot be made to publish with ambient credentials).
func (a *Authorizer) PublishGrant(r *http.Request) (*Grant, error) {
	tok, ok, err := bearer(r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: send Authorization: Bearer followed by a token or the API key", ErrNoCredentials)
	}
	if a.apiKey != nil && subtle.ConstantTimeCompare([]byte(tok), a.apiKey) == 1 {
		return &Grant{Principal: "key", all: true}, nil
	}
	if !a.Tokens() {
		return nil, fmt.Errorf("%w: the API key does not match", ErrInvalidToken)
	}
	return a.Parse(tok)
}

// AdminKey reports whether an admin key is configured.
func (a *Authorizer) AdminKey() bool { return a != nil && a.admKey != nil }

// AdminProtected reports whether the admin API needs a credential: an
// admin key or tokens are configured. Without either, a server decides by
// the peer's address.
func (a *Authorizer) AdminProtected() bool { return a.AdminKey() || a.Tokens() }

// AuthorizeAdmin checks that r carries the admin key or a token granting
// admin ("herald": {"admin": true}) in "Authorization: Bearer" (cookies
// and the query are not read). Errors wrap ErrNoCredentials,
// ErrInvalidToken or ErrForbidden.
func (a *Authorizer) AuthorizeAdmin(r *http.Request) (*Grant, error) {
	tok, ok, err := bearer(r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: send Authorization: Bearer followed by the admin key or a token granting admin", ErrNoCredentials)
	}
	if a.admKey != nil && subtle.ConstantTimeCompare([]byte(tok), a.admKey) == 1 {
		return &Grant{Principal: "admin-key", admin: true}, nil
	}
	if !a.Tokens() {
		return nil, fmt.Errorf("%w: the admin key does not match", ErrInvalidToken)
	}
	g, err := a.Parse(tok)
	if err != nil {
		return nil, err
	}
	if !g.admin {
		return g, fmt.Errorf("%w: the token does not grant admin", ErrForbidden)
	}
	return g, nil
}

// AuthorizePublish checks that r may publish to topic and returns the
// grant. Errors wrap ErrNoCredentials, ErrInvalidToken or ErrForbidden.
func (a *Authorizer) AuthorizePublish(r *http.Request, topic string) (*Grant, error) {
	g, err := a.PublishGrant(r)
	if err != nil {
		return nil, err
	}
	if !g.Allows(Publish, topic) {
		return g, fmt.Errorf("%w: the token does not allow publishing to %q", ErrForbidden, topic)
	}
	return g, nil
}

// SubscribeToken returns a subscriber's token: from "Authorization:
// Bearer", else the herald_token cookie, else the access_token query
// parameter.
func SubscribeToken(r *http.Request) (string, error) {
	tok, ok, err := bearer(r)
	if ok || err != nil {
		return tok, err
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return c.Value, nil
	}
	if tok := r.URL.Query().Get(QueryParam); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("%w: send Authorization: Bearer <token>, the %s cookie or the %s query parameter", ErrNoCredentials, CookieName, QueryParam)
}

// AuthorizeSubscribe checks that r may follow every topic and returns the
// grant (nil when subscribing is not protected). Errors wrap
// ErrNoCredentials, ErrInvalidToken or ErrForbidden.
func (a *Authorizer) AuthorizeSubscribe(r *http.Request, topics []string) (*Grant, error) {
	if !a.SubscribeProtected() {
		return nil, nil
	}
	tok, err := SubscribeToken(r)
	if err != nil {
		return nil, err
	}
	g, err := a.Parse(tok)
	if err != nil {
		return nil, err
	}
	for _, t := range topics {
		if !g.Allows(Subscribe, t) {
			return g, fmt.Errorf("%w: the token does not allow subscribing to %q", ErrForbidden, t)
		}
	}
	return g, nil
}

// Status is the HTTP status of an authorization error: 401 for missing or
// invalid credentials, 403 for a valid credential without the right, 500
// otherwise.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrNoCredentials), errors.Is(err, ErrInvalidToken):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// Challenge returns the WWW-Authenticate value (RFC 6750) for an
// authorization error, "" when none belongs to it.
func Challenge(err error) string {
	switch {
	case errors.Is(err, ErrNoCredentials):
		return `Bearer realm="herald"`
	case errors.Is(err, ErrInvalidToken):
		return `Bearer realm="herald", error="invalid_token"`
	case errors.Is(err, ErrForbidden):
		return `Bearer realm="herald", error="insufficient_scope"`
	}
	return ""
}

// Message is the client-facing text of an authorization error, without
// the package prefix.
func Message(err error) string {
	return strings.ReplaceAll(err.Error(), "auth: ", "")
}
