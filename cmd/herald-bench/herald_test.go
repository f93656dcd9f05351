package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-sse/herald/internal/server"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"github.com/herald-sse/herald/pkg/sse"
	"github.com/redis/go-redis/v9"
)

// startHerald serves herald with its in-process broker on a loopback port
// (publishing is open to loopback) and returns its base URL.
func startHerald(t *testing.T, mutate ...func(*server.Config)) string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DrainDelay = 0
	cfg.DrainTimeout = 5 * time.Second
	cfg.PublishBurst = 1 << 20
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("herald shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("herald serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func TestHeraldBatch(t *testing.T) {
	u := startHerald(t)
	cfg := testConfig(u)
	cfg.events = 103
	cfg.batch = 10
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Published != 103 || res.PublishErrors != 0 || res.Expected != 3*52+3*51 {
		t.Fatalf("published %d (%d errors) expected %d: %q", res.Published, res.PublishErrors, res.Expected, res.Errors)
	}
	if res.Delivered != res.Expected || res.Lost != 0 || res.Duplicated != 0 || res.Reordered != 0 || res.CompleteSubs != 6 {
		t.Errorf("delivered %d lost %d dup %d reordered %d complete %d; errors %q",
			res.Delivered, res.Lost, res.Duplicated, res.Reordered, res.CompleteSubs, res.Errors)
	}
	if res.PublishRTT.N != 12 { // per publisher: 52 = 5×10+2, 51 = 5×10+1
		t.Errorf("publish RTT recorded %d times, want 12 (per request)", res.PublishRTT.N)
	}
}

func TestHeraldIdempotent(t *testing.T) {
	u := startHerald(t)
	for _, batch := range []int{1, 7} {
		cfg := testConfig(u)
		cfg.idempotent = true
		cfg.batch = batch
		res, err := run(context.Background(), cfg, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Published != 40 || res.PublishErrors != 0 || res.Delivered != res.Expected || res.Expected != 120 || res.CompleteSubs != 6 {
			t.Errorf("batch %d: published %d (%d errors) delivered %d of %d, complete %d: %q",
				batch, res.Published, res.PublishErrors, res.Delivered, res.Expected, res.CompleteSubs, res.Errors)
		}
	}
}

func TestHeraldSubTopics(t *testing.T) {
	// 8 concurrent publishers, 1 subscriber on all 8 topics; and 5
	// subscribers on 3 of 5 topics each; with batches and keys.
	u := startHerald(t)
	for _, c := range []struct{ subs, topics, subTopics, publishers, batch int }{
		{1, 8, 8, 8, 1},
		{1, 8, 8, 8, 3},
		{5, 5, 3, 5, 2},
	} {
		cfg := testConfig(u)
		cfg.subs, cfg.topics, cfg.subTopics, cfg.publishers, cfg.batch = c.subs, c.topics, c.subTopics, c.publishers, c.batch
		cfg.events = 80
		cfg.idempotent = true
		res, err := run(context.Background(), cfg, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(c.subs * c.subTopics * 80 / c.topics)
		if res.Published != 80 || res.Expected != want || res.Delivered != want || res.Lost != 0 || res.Duplicated != 0 ||
			res.Reordered != 0 || res.Foreign != 0 || res.CompleteSubs != c.subs {
			t.Errorf("%+v: published %d expected %d (want %d) delivered %d lost %d dup %d reordered %d foreign %d complete %d: %q",
				c, res.Published, res.Expected, want, res.Delivered, res.Lost, res.Duplicated, res.Reordered, res.Foreign, res.CompleteSubs, res.Errors)
		}
	}
}

// startRedis runs a throw-away redis-server on a free loopback port (the
// test is skipped without one on PATH) and returns its URL.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no redis-server on PATH (CI=true: .ci/run installs it)")
		}
		t.Skip("no redis-server on PATH")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "redis://" + addr + "/0"
}

func TestHeraldRedisBatchIdempotent(t *testing.T) {
	rurl := startRedis(t)
	u := startHerald(t, func(c *server.Config) { c.RedisURL = rurl })
	for _, batch := range []int{1, 5} {
		cfg := testConfig(u)
		cfg.publishVia = "redis"
		cfg.redisURL = rurl
		cfg.redisPrefix = "herald"
		cfg.batch = batch
		cfg.idempotent = true
		cfg.events = 42
		res, err := run(context.Background(), cfg, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Published != 42 || res.PublishErrors != 0 || res.Expected != 126 || res.Delivered != 126 || res.CompleteSubs != 6 {
			t.Errorf("batch %d: published %d (%d errors) delivered %d of %d, complete %d: %q",
				batch, res.Published, res.PublishErrors, res.Delivered, res.Expected, res.CompleteSubs, res.Errors)
		}
		if wantReq := map[int]uint64{1: 42, 5: 10}[batch]; res.PublishRTT.N != wantReq { // 21 per publisher: 4×5+1
			t.Errorf("batch %d: %d requests, want %d", batch, res.PublishRTT.N, wantReq)
		}
	}
	// Keys went as the 4th argument: herald recorded them.
	rdb := redis.NewClient(&redis.Options{Addr: strings.TrimSuffix(strings.TrimPrefix(rurl, "redis://"), "/0")})
	defer rdb.Close()
	keys, err := rdb.Keys(context.Background(), "*:k:*").Result()
	if err != nil || len(keys) != 84 {
		t.Errorf("idempotency keys in Redis: %d (%v), want 84", len(keys), err)
	}
}

// hbConfig is an idle run (no events) sampling the heartbeats of 10 of 20
// streams, expecting one every 200 ms (late beyond 1.2 s: the tolerance is
// at least 1 s).
func hbConfig(u string, hold time.Duration) config {
	cfg := testConfig(u)
	cfg.subs, cfg.events, cfg.hold, cfg.settle = 20, 0, hold, 0
	cfg.hbSample, cfg.heartbeat = 10, 200*time.Millisecond
	return cfg
}

func TestHeraldHeartbeats(t *testing.T) {
	u := startHerald(t, func(c *server.Config) { c.Heartbeat = 200 * time.Millisecond })
	res, err := run(context.Background(), hbConfig(u, time.Second), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	hb := res.Heartbeats
	if hb == nil || res.Connected != 20 {
		t.Fatalf("connected %d, heartbeats %+v: %q", res.Connected, hb, res.Errors)
	}
	// About 5 heartbeats per stream in ~1 s; herald staggers them over 8
	// slots of the interval, so the first comes within 200 ms.
	if hb.Streams != 10 || hb.Seen < 30 || hb.Silent != 0 || hb.Missing != 0 || hb.Late != 0 || hb.Overdue != 0 {
		t.Errorf("heartbeats %+v", hb)
	}
	if hb.First.N != 10 || hb.First.Max > 400 || hb.Gap.N != hb.Seen-10 {
		t.Errorf("first %+v, gaps %+v of %d seen", hb.First, hb.Gap, hb.Seen)
	}
	if hb.Gap.P50 < 150 || hb.Gap.P50 > 300 || hb.Gap.Max > 1000 {
		t.Errorf("gaps %+v, want near 200 ms", hb.Gap)
	}
	if hb.ObservedMinMs < 900 || hb.IntervalMs != 200 || hb.ToleranceMs != 1000 {
		t.Errorf("observed %v-%v ms, interval %v ± %v", hb.ObservedMinMs, hb.ObservedMaxMs, hb.IntervalMs, hb.ToleranceMs)
	}
	var out bytes.Buffer
	res.printTable(&out)
	if !strings.Contains(out.String(), "on 10 sampled streams") || !strings.Contains(out.String(), "late 0, overdue 0, missing 0") {
		t.Errorf("table:\n%s", out.String())
	}
}

func TestHeartbeatsMissing(t *testing.T) {
	// pkg/sse's handler without heartbeats: every sampled stream, watched
	// 1.5 s, misses its heartbeat.
	b := membroker.New(membroker.Config{})
	t.Cleanup(func() { _ = b.Close() })
	mux := http.NewServeMux()
	mux.Handle("/events", &sse.TopicHandler{Broker: b, Heartbeat: -1})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	cfg := hbConfig(srv.URL, 1500*time.Millisecond)
	res, err := run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if hb := res.Heartbeats; res.Connected != 20 || hb == nil || hb.Streams != 10 || hb.Seen != 0 || hb.Silent != 10 ||
		hb.Missing != 10 || hb.Overdue != 10 || hb.Late != 0 || hb.ObservedMinMs < 1200 {
		t.Fatalf("connected %d, heartbeats %+v: %q", res.Connected, hb, res.Errors)
	}
	var out bytes.Buffer
	res.printTable(&out)
	if !strings.Contains(out.String(), "10 without any; expected every 200ms + 1s: late 0, overdue 10, missing 10") {
		t.Errorf("table:\n%s", out.String())
	}

	// Without -heartbeat nothing is judged.
	cfg.heartbeat = 0
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if hb := res.Heartbeats; hb == nil || hb.Silent != 10 || hb.Missing != 0 || hb.Overdue != 0 || hb.IntervalMs != 0 {
		t.Errorf("unknown interval: %+v", hb)
	}

	// A stream whose only comment comes with its head (the fanout test
	// server's ":ok") has a heartbeat, then none: overdue, not missing.
	cfg = hbConfig(startFanout(t, newFanout()), 1500*time.Millisecond)
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if hb := res.Heartbeats; hb == nil || hb.Seen != 10 || hb.Silent != 0 || hb.Missing != 0 || hb.Overdue != 10 || hb.First.Max > 500 {
		t.Errorf("opening comment only: %+v", hb)
	}

	// -hb-sample 0: no sample, no summary object.
	cfg.hbSample, cfg.hold = 0, 0
	res, err = run(context.Background(), cfg, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Heartbeats != nil {
		t.Errorf("-hb-sample 0: %+v", res.Heartbeats)
	}
}
