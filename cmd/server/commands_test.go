package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/internal/server"
)

var testSecret = strings.Repeat("s3cr3t-", 6) // 42 bytes

// run runs the binary's dispatch as main does, with env as the whole environment.
func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code, ok := dispatch(args, func(n string) string { return env[n] }, &out, &errb)
	if !ok {
		t.Fatalf("%q was not dispatched to a command", args)
	}
	return code, out.String(), errb.String()
}

func TestTokenAccepted(t *testing.T) {
	for name, c := range map[string]struct {
		env  map[string]string
		args []string
		ac   auth.Config
	}{
		"secret from env": {
			env:  map[string]string{"HERALD_JWT_SECRET": testSecret, "HERALD_TTL": "1s", "HERALD_SUB": "env"}, // own flags have no twins
			args: []string{"--sub", "u42", "--subscribe", "news.*", "--publish", "chat.7", "--ttl", "15m"},
			ac:   auth.Config{Secret: []byte(testSecret)},
		},
		"secret from flag, audience and issuer configured": {
			env:  map[string]string{"HERALD_JWT_AUDIENCE": "app", "HERALD_JWT_ISSUER": "ops"},
			args: []string{"--jwt-secret=" + testSecret, "--sub=u42", "--subscribe=news.*", "--publish", "chat.7"},
			ac:   auth.Config{Secret: []byte(testSecret), Audience: "app", Issuer: "ops"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := run(t, c.env, append([]string{"token"}, c.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			tok := strings.TrimSpace(out)
			if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
				t.Fatalf("stdout %q is not one token", out)
			}
			a, err := auth.New(c.ac)
			if err != nil {
				t.Fatal(err)
			}
			g, err := a.Parse(tok)
			if err != nil {
				t.Fatalf("the server's verifier refuses the token: %v", err)
			}
			if g.Principal != "sub:u42" {
				t.Errorf("principal %q", g.Principal)
			}
			if !g.Allows(auth.Subscribe, "news.eu") || g.Allows(auth.Subscribe, "chat.7") ||
				!g.Allows(auth.Publish, "chat.7") || g.Allows(auth.Publish, "news.eu") {
				t.Error("the token's rights are not exactly subscribe news.* and publish chat.7")
			}
			if left := time.Until(g.Expires) - auth.DefaultLeeway; left < 14*time.Minute || left > 15*time.Minute {
				t.Errorf("expires in %v, want 15m", left)
			}
		})
	}

	// Several patterns, comma-separated or repeated.
	code, out, errs := run(t, map[string]string{"HERALD_JWT_SECRET": testSecret}, "token", "--subscribe", "a,b.*", "--subscribe", "c")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	a, _ := auth.New(auth.Config{Secret: []byte(testSecret)})
	g, err := a.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"a", "b.x", "c"} {
		if !g.Allows(auth.Subscribe, topic) {
			t.Errorf("may not subscribe to %s", topic)
		}
	}
	if g.Allows(auth.Publish, "a") {
		t.Error("a subscribe-only token may publish")
	}
}

func TestTokenRefuses(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := map[string]string{"HERALD_JWT_SECRET": testSecret}
	for name, c := range map[string]struct {
		env  map[string]string
		args []string
		want string
	}{
		"no key":            {nil, []string{"--subscribe", "a"}, "no signing key: set --jwt-secret or HERALD_JWT_SECRET"},
		"public key only":   {nil, []string{"--jwt-public-key-file", pubFile, "--subscribe", "a"}, "cannot mint"},
		"short secret":      {map[string]string{"HERALD_JWT_SECRET": "short"}, []string{"--subscribe", "a"}, "HERALD_JWT_SECRET: the HMAC secret is 5 bytes"},
		"no rights":         {secret, []string{"--sub", "u42"}, "grants nothing"},
		"bad pattern":       {secret, []string{"--publish", "a b"}, "pattern"},
		"zero ttl":          {secret, []string{"--subscribe", "a", "--ttl", "0s"}, "positive lifetime"},
		"bad ttl":           {secret, []string{"--subscribe", "a", "--ttl", "soon"}, "--ttl"},
		"unknown flag":      {secret, []string{"--subscribe", "a", "--nope"}, "--nope"},
		"invalid server":    {map[string]string{"HERALD_JWT_SECRET": testSecret, "HERALD_HEARTBEAT": "0s"}, []string{"--subscribe", "a"}, "HERALD_HEARTBEAT"},
		"positional left":   {secret, []string{"--subscribe", "a", "u42"}, "unexpected argument"},
		"token from env ok": {secret, []string{"--subscribe", "a"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := run(t, c.env, append([]string{"token"}, c.args...)...)
			if c.want == "" {
				if code != 0 || out == "" {
					t.Fatalf("exit %d, stdout %q: %s", code, out, errs)
				}
				return
			}
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if out != "" {
				t.Errorf("printed %q on stdout", out)
			}
			if !strings.Contains(errs, c.want) {
				t.Errorf("stderr %q lacks %q", errs, c.want)
			}
		})
	}
}

func TestConfigSources(t *testing.T) {
	env := map[string]string{
		"HERALD_HEARTBEAT":  "20s",   // env only
		"HERALD_ADDR":       ":9000", // env, beaten by the flag
		"HERALD_REDIS_URL":  "redis://:hunter2@redis:6379/0",
		"HERALD_JWT_SECRET": testSecret,
		"HERALD_API_KEY":    "api-key-0123456789",
	}
	code, out, errs := run(t, env, "config", "--json", "--addr", ":7000", "--max-connections=500")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got struct {
		Settings []jsonSetting
		Valid    bool
		Error    string
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if !got.Valid || got.Error != "" {
		t.Errorf("valid %v, error %q", got.Valid, got.Error)
	}
	by := map[string]jsonSetting{}
	for _, s := range got.Settings {
		by[s.Flag] = s
	}
	want := map[string]struct{ value, source string }{
		"addr":            {":7000", "flag"},
		"max-connections": {"500", "flag"},
		"heartbeat":       {"20s", "env"},
		"redis-url":       {"redis://:xxxxx@redis:6379/0", "env"},
		"jwt-secret":      {server.Masked, "env"},
		"api-key":         {server.Masked, "env"},
		"history-size":    {"1000", "default"},
		"drain-timeout":   {"25s", "default"},
		"json":            {"", ""}, // the command's own flag is no server setting
	}
	for flag, w := range want {
		s, ok := by[flag]
		if w.source == "" {
			if ok {
				t.Errorf("--%s is listed as a server setting", flag)
			}
			continue
		}
		if !ok || s.Value != w.value || s.Source != w.source {
			t.Errorf("--%s = %+v, want value %q from %s", flag, s, w.value, w.source)
		}
		if s.Env != server.EnvName(flag) {
			t.Errorf("--%s: env %q", flag, s.Env)
		}
	}
	if !by["jwt-secret"].Secret || !by["api-key"].Secret {
		t.Error("the credentials are not marked secret")
	}
	// Every setting the server parses is listed: the parser's lookups are the reference.
	looked := map[string]bool{}
	_, _ = server.ParseConfig(nil, func(n string) string { looked[n] = true; return "" }, nil)
	for name := range looked {
		found := false
		for _, s := range got.Settings {
			found = found || s.Env == name
		}
		if !found {
			t.Errorf("%s is read by the server but not listed", name)
		}
	}

	// The table: no secret anywhere, sources spelled out.
	code, out, errs = run(t, env, "config", "--addr", ":7000")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, secret := range []string{testSecret, "hunter2", "api-key-0123456789"} {
		if strings.Contains(out+errs, secret) {
			t.Errorf("the output shows the secret %q:\n%s", secret, out)
		}
	}
	for _, line := range []string{"--addr ", ":7000", "flag", "env HERALD_HEARTBEAT", "valid: listens on :7000, Redis broker, tokens and an API key"} {
		if !strings.Contains(out, line) {
			t.Errorf("the table lacks %q:\n%s", line, out)
		}
	}
}

func TestConfigInvalid(t *testing.T) {
	for name, c := range map[string]struct {
		env   map[string]string
		args  []string
		want  string
		table bool // the settings are still printed
	}{
		"bad value from env":   {map[string]string{"HERALD_HEARTBEAT": "often"}, nil, "HERALD_HEARTBEAT: invalid value", false},
		"bad flag":             {nil, []string{"--max-topics", "many"}, "--max-topics", false},
		"unknown flag":         {nil, []string{"--max-topic", "3"}, "--max-topic", false},
		"cross-setting rule":   {nil, []string{"--drain-delay", "30s"}, "--drain-delay: 30s must be shorter than --drain-timeout", true},
		"rule on env value":    {map[string]string{"HERALD_REDIS_PREFIX": "a-b"}, nil, "HERALD_REDIS_PREFIX", true},
		"missing key file":     {nil, []string{"--api-key-file", "/nonexistent/key"}, "--api-key-file", true},
		"weak secret":          {map[string]string{"HERALD_JWT_SECRET": "short"}, nil, "HERALD_JWT_SECRET", true},
		"unexpected arguments": {nil, []string{"extra"}, "arguments: unexpected argument", false},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := run(t, c.env, append([]string{"config"}, c.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errs, "invalid configuration: "+c.want) {
				t.Errorf("stderr %q lacks %q", errs, c.want)
			}
			if hasTable := strings.Contains(out, "SETTING"); hasTable != c.table {
				t.Errorf("table printed: %v, want %v", hasTable, c.table)
			}
			if strings.Contains(out, "valid:") {
				t.Error("an invalid configuration is called valid")
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if _, ok := dispatch([]string{"--help"}, func(string) string { return "" }, &out, &errb); ok {
		t.Fatal("--help is the server's: main must still print the server's flags")
	}
	for _, c := range commands {
		if !strings.Contains(errb.String(), "\n  "+c.name+" ") {
			t.Errorf("herald --help does not list %s:\n%s", c.name, errb.String())
		}
	}
	for _, args := range [][]string{{"token", "--help"}, {"config", "-h"}, {"healthcheck", "--help"}, {"help", "token"}, {"help"}} {
		code, _, errs := run(t, nil, args...)
		if code != 0 || !strings.Contains(errs, "Usage") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errs)
		}
	}
	_, _, errs := run(t, nil, "token", "--help")
	for _, want := range []string{"--ttl duration", "(default 15m0s)", "--subscribe patterns", "Server settings", "--jwt-secret string", "env HERALD_JWT_SECRET"} {
		if !strings.Contains(errs, want) {
			t.Errorf("token --help lacks %q", want)
		}
	}
	if strings.Contains(errs, "HERALD_TTL") || strings.Contains(errs, "HERALD_SUB") {
		t.Error("the command's own flags are shown with environment twins")
	}
}

// TestTokenAdmin: herald token --admin mints a token the admin API
// accepts, alone or with patterns; without it the token is refused there.
func TestTokenAdmin(t *testing.T) {
	a, err := auth.New(auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	adminReq := func(tok string) error {
		r := httptest.NewRequest("GET", "/api/nodes", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		_, err := a.AuthorizeAdmin(r)
		return err
	}
	for _, args := range [][]string{{"--admin"}, {"--admin", "--subscribe", "x"}} {
		code, out, errs := run(t, map[string]string{"HERALD_JWT_SECRET": testSecret}, append([]string{"token"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		if err := adminReq(strings.TrimSpace(out)); err != nil {
			t.Errorf("%v: the admin API refuses the token: %v", args, err)
		}
	}
	code, out, _ := run(t, map[string]string{"HERALD_JWT_SECRET": testSecret}, "token", "--subscribe", "x")
	if code != 0 {
		t.Fatal(code)
	}
	if err := adminReq(strings.TrimSpace(out)); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("a token without --admin: %v, want forbidden", err)
	}
}
