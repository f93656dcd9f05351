package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/internal/server"
)

const tokenUsage = `Usage: herald token [--sub id] [--subscribe patterns] [--publish patterns] [--admin] [--ttl 15m] [server settings]

Mints an HS256 token signed with the server's --jwt-secret (or
HERALD_JWT_SECRET) and prints it. The token carries the "herald" claim with
the given patterns, exp after --ttl, and the aud and iss the server checks
(--jwt-audience, --jwt-issuer). A pattern is a topic, a prefix ending in *
("news.*"), or * for every topic; repeat a flag or separate patterns with
commas. --admin grants the admin API (GET /api/..., the status page's
stream). Exit 2 without a secret or with an invalid configuration.

Flags:
`

// tokenCommand is herald token: it reads the server's configuration with
// the server's parser and mints with internal/auth's encoding, so the
// token is exactly one the server accepts.
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var (
		sub                string
		subscribe, publish patterns
		ttl                time.Duration
		admin              bool
	)
	cmd := server.Command{Usage: tokenUsage, Flags: func(fs *flag.FlagSet) {
		fs.StringVar(&sub, "sub", "", "the token's subject (sub): `id` of who holds it, for logs and --publish-rate")
		fs.Var(&subscribe, "subscribe", "topic `patterns` the holder may subscribe to")
		fs.Var(&publish, "publish", "topic `patterns` the holder may publish to")
		fs.BoolVar(&admin, "admin", false, "grant the admin API (cluster view, status stream)")
		fs.DurationVar(&ttl, "ttl", 15*time.Minute, "lifetime of the token (exp)")
	}}
	cfg, _, err := server.ParseCommand(args, getenv, stderr, cmd)
	if errors.Is(err, server.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "herald token: invalid configuration: %v\n", err)
		return 2
	}
	if cfg.JWTSecret == "" {
		if cfg.JWTPublicKeyFile != "" {
			fmt.Fprintln(stderr, "herald token: this configuration verifies tokens with a public key (--jwt-public-key-file); herald cannot mint those: sign them with your issuer's private key")
		} else {
			fmt.Fprintln(stderr, "herald token: no signing key: set --jwt-secret or HERALD_JWT_SECRET (the server's own HMAC secret)")
		}
		return 2
	}
	tok, err := auth.Mint([]byte(cfg.JWTSecret), auth.Token{
		Subject:   sub,
		Subscribe: subscribe,
		Publish:   publish,
		Admin:     admin,
		Audience:  cfg.JWTAudience,
		Issuer:    cfg.JWTIssuer,
		TTL:       ttl,
	})
	if err != nil {
		fmt.Fprintf(stderr, "herald token: %s\n", auth.Message(err))
		return 2
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// patterns is a repeatable, comma-separated list flag.
type patterns []string

func (p *patterns) String() string { return strings.Join(*p, ",") }

func (p *patterns) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*p = append(*p, part)
		}
	}
	return nil
}
