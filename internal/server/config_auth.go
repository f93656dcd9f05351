package server

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/herald-sse/herald/internal/auth"
)

// authorizer builds the authorization the configuration asks for, reading
// the key files. It returns nil without error when none is configured.
func (c *Config) authorizer(setting func(string) string) (*auth.Authorizer, error) {
	bad := func(name string, err error) error {
		return &ConfigError{Setting: setting(name), Err: err}
	}
	ac := auth.Config{
		Secret:             []byte(c.JWTSecret),
		Leeway:             c.JWTLeeway,
		Audience:           c.JWTAudience,
		Issuer:             c.JWTIssuer,
		APIKey:             c.APIKey,
		AdminKey:           c.AdminKey,
		AnonymousSubscribe: c.AnonymousSubscribe,
	}
	if c.JWTLeeway == 0 {
		ac.Leeway = -1 // an explicit 0: no allowance
	}
	if c.JWTSecret != "" && c.JWTPublicKeyFile != "" {
		return nil, bad("jwt-public-key-file", errors.New("set --jwt-secret or --jwt-public-key-file, not both"))
	}
	if c.JWTPublicKeyFile != "" {
		pemData, err := os.ReadFile(c.JWTPublicKeyFile)
		if err != nil {
			return nil, bad("jwt-public-key-file", err)
		}
		ac.PublicKeyPEM = pemData
	}
	// keyFile reads the key a --<name>-file setting names into *dst.
	keyFile := func(name, path, inline string, dst *string) error {
		if path == "" {
			return nil
		}
		if inline != "" {
			return bad(name+"-file", fmt.Errorf("set --%s or --%s-file, not both", name, name))
		}
		key, err := os.ReadFile(path)
		if err != nil {
			return bad(name+"-file", err)
		}
		if *dst = strings.TrimSpace(string(key)); *dst == "" {
			return bad(name+"-file", fmt.Errorf("%s is empty", path))
		}
		return nil
	}
	if err := keyFile("api-key", c.APIKeyFile, c.APIKey, &ac.APIKey); err != nil {
		return nil, err
	}
	if err := keyFile("admin-key", c.AdminKeyFile, c.AdminKey, &ac.AdminKey); err != nil {
		return nil, err
	}
	if len(ac.Secret) == 0 && len(ac.PublicKeyPEM) == 0 && ac.APIKey == "" && ac.AdminKey == "" {
		return nil, nil
	}
	a, err := auth.New(ac)
	if err != nil {
		name := "api-key"
		switch {
		case c.AdminKeyFile != "" && strings.Contains(err.Error(), "admin key"):
			name = "admin-key-file"
		case strings.Contains(err.Error(), "admin key"):
			name = "admin-key"
		case c.APIKeyFile != "" && strings.Contains(err.Error(), "API key"):
			name = "api-key-file"
		case strings.Contains(err.Error(), "API key"):
		case c.JWTPublicKeyFile != "":
			name = "jwt-public-key-file"
		default:
			name = "jwt-secret"
		}
		return nil, bad(name, errors.New(strings.TrimPrefix(err.Error(), "auth: ")))
	}
	return a, nil
}
