package server

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestMaskURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                               "",
		"redis://redis:6379/0":           "redis://redis:6379/0",
		"redis://:pw@redis:6379/0":       "redis://:xxxxx@redis:6379/0",
		"rediss://user:pw@redis:6379/2":  "rediss://user:xxxxx@redis:6379/2",
		"redis://s1:26379?master_name=m": "redis://s1:26379?master_name=m",
		"redis://s1:26379?sentinel_password=pw&master_name=m": "redis://s1:26379?master_name=m&sentinel_password=xxxxx",
		"redis://:pw@[bad": Masked,
	} {
		if got := maskURL(in); got != want {
			t.Errorf("maskURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseCommand(t *testing.T) {
	var n int
	cmd := Command{Usage: "Usage: herald x\n", Flags: func(fs *flag.FlagSet) { fs.IntVar(&n, "n", 1, "a number") }}
	env := map[string]string{"HERALD_N": "7", "HERALD_MAX_TOPICS": "4"}
	cfg, settings, err := ParseCommand([]string{"--n", "3", "--heartbeat=5s"}, func(k string) string { return env[k] }, io.Discard, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || cfg.MaxTopics != 4 || cfg.Heartbeat.String() != "5s" {
		t.Errorf("n=%d max-topics=%d heartbeat=%v", n, cfg.MaxTopics, cfg.Heartbeat)
	}
	src := map[string]Source{}
	for _, s := range settings {
		src[s.Flag] = s.Source
	}
	if _, ok := src["n"]; ok {
		t.Error("the command's own flag is listed as a setting")
	}
	if src["heartbeat"] != SourceFlag || src["max-topics"] != SourceEnv || src["addr"] != SourceDefault {
		t.Errorf("sources %v", src)
	}
	// Own flags never come from the environment.
	n = 0
	if _, _, err := ParseCommand(nil, func(k string) string { return env[k] }, io.Discard, cmd); err != nil || n != 1 {
		t.Errorf("n = %d (%v), want the default 1", n, err)
	}
	// --help: the command's usage, its flags, then the server's.
	var b strings.Builder
	if _, _, err := ParseCommand([]string{"--help"}, nil, &b, cmd); !errors.Is(err, ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	if u := b.String(); !strings.HasPrefix(u, "Usage: herald x\n  --n int\n") || !strings.Contains(u, "env HERALD_REDIS_URL") || strings.Contains(u, "HERALD_N)") {
		t.Errorf("usage:\n%s", u)
	}
	// A validation error still returns the settings.
	_, settings, err = ParseCommand([]string{"--max-topics", "0"}, nil, io.Discard, Command{})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Setting != "--max-topics" || len(settings) == 0 {
		t.Errorf("err %v, %d settings", err, len(settings))
	}
}
