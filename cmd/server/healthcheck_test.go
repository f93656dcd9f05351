package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	env := func(v string) func(string) string {
		return func(name string) string {
			if name == "HERALD_ADDR" {
				return v
			}
			return ""
		}
	}
	if code := healthcheck(nil, env(addr), io.Discard); code != 0 {
		t.Errorf("healthy server via HERALD_ADDR: exit %d, want 0", code)
	}
	if code := healthcheck([]string{"--addr", addr, "--path", "/readyz"}, env(""), io.Discard); code != 0 {
		t.Errorf("--addr --path /readyz: exit %d, want 0", code)
	}
	if code := healthcheck([]string{"--addr", addr, "--path", "/nope"}, env(""), io.Discard); code != 1 {
		t.Errorf("404: exit %d, want 1", code)
	}
	status = http.StatusServiceUnavailable
	if code := healthcheck(nil, env(addr), io.Discard); code != 1 {
		t.Errorf("503: exit %d, want 1", code)
	}
	srv.Close()
	if code := healthcheck(nil, env(addr), io.Discard); code != 1 {
		t.Errorf("nothing listening: exit %d, want 1", code)
	}
	if code := healthcheck([]string{"--addr", "nonsense"}, env(""), io.Discard); code != 2 {
		t.Errorf("bad --addr: exit %d, want 2", code)
	}
}

func TestCheckURL(t *testing.T) {
	for addr, want := range map[string]string{
		":8080":          "http://127.0.0.1:8080/healthz",
		"0.0.0.0:9000":   "http://127.0.0.1:9000/healthz",
		"[::]:8080":      "http://[::1]:8080/healthz",
		"10.0.0.5:8080":  "http://10.0.0.5:8080/healthz",
		"localhost:8080": "http://localhost:8080/healthz",
	} {
		got, err := checkURL(addr, "healthz")
		if err != nil || got != want {
			t.Errorf("checkURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
}
