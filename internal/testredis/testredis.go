// Package testredis starts throw-away Redis servers in Docker for tests,
// through testcontainers-go, and lets a test break them: stop, start,
// restart (with or without persistence), pause, unpause.
//
// The image is $HERALD_REDIS_IMAGE, default "redis:7-alpine". It is never
// pulled by a test: machines without a registry (CI) build a local image
// with scripts/redis-image.sh, which tags it under that name. When the image
// is missing or Docker is unreachable, Start skips the test with a message
// naming the script — or fails it when CI=true.
//
// StartSentinel starts a whole Sentinel topology (a primary, replicas and
// sentinels, one container each on a network of its own) from the same
// Redis image and $HERALD_SENTINEL_IMAGE (default herald-sentinel:local,
// built by scripts/images.sh sentinel from Debian's redis-sentinel), and
// lets a test kill, restart, pause or cut off any node. StartCluster starts
// a Redis Cluster (primaries, replicas, formed by hand without redis-cli)
// from the Redis image the same way, with helpers for live resharding
// (MigrateSlot, AddPrimary), failover (WaitFailover) and the cluster bus's
// pub/sub counters (PublishSent).
//
// The testcontainers reaper (ryuk) needs an image from a registry, so this
// package sets TESTCONTAINERS_RYUK_DISABLED=true (when unset) before the
// first container starts and removes its containers itself in t.Cleanup.
// CI may remove leftovers of a killed run with
// `docker rm -f $(docker ps -aq --filter label=org.testcontainers=true)`.
package testredis

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// DefaultImage is the image used when HERALD_REDIS_IMAGE is unset.
const DefaultImage = "redis:7-alpine"

// Script is the command that prepares the image on a machine without a
// registry; it is named in skip and failure messages.
const Script = "scripts/redis-image.sh"

// Image returns the Redis image tests use: $HERALD_REDIS_IMAGE or
// DefaultImage.
func Image() string { return envOr("HERALD_REDIS_IMAGE", DefaultImage) }

// envOr returns $name, or def when it is unset or empty.
func envOr(name, def string) string {
	if s := os.Getenv(name); s != "" {
		return s
	}
	return def
}

func init() {
	// Must be the exact string "true"; set before testcontainers reads its
	// configuration (on first use).
	if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
}

// Option configures Start.
type Option func(*config)

type config struct {
	args []string
}

// WithPersistence makes the server keep its data in the container's /data
// (append-only file, fsync on every write), so Restart, Stop+Start keep
// streams, keys and functions. Without it the server keeps nothing across
// restarts.
func WithPersistence() Option {
	return func(c *config) { c.args = append(c.args, "--appendonly", "yes", "--appendfsync", "always") }
}

// WithArgs appends redis-server config overrides ("--name value").
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Redis is one running Redis container. Its address stays the same across
// Stop/Start/Restart (the host port is fixed at creation), so clients
// reconnect by themselves. Methods fail the test on error; they are safe
// for concurrent use.
type Redis struct {
	// Addr is host:port of the server, on the loopback interface.
	Addr string

	ctr testcontainers.Container
	api client.APIClient

	mu     sync.Mutex // serialises lifecycle changes; guards paused
	paused bool
}

// URL returns a redis:// URL for Addr (database 0).
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Client returns a new go-redis client for the server, closed at cleanup.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("testredis: %s", msg)
	}
	t.Skipf("testredis: %s", msg)
}

// Start starts a Redis container and registers its removal with t.Cleanup.
// It skips the test (fails it when CI=true) if Docker is unreachable or the
// image is not present locally.
func Start(t testing.TB, opts ...Option) *Redis {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	dc, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		unavailable(t, "Docker is not reachable (%v); these tests need a Docker Engine", err)
	}
	t.Cleanup(func() { dc.Close() })
	img := Image()
	if _, err := dc.ImageInspect(ctx, img); err != nil {
		unavailable(t, "image %s is not present locally (%v); run %s to build it without a registry", img, err, Script)
	}

	port, err := freePort()
	if err != nil {
		t.Fatalf("testredis: %v", err)
	}
	req := testcontainers.ContainerRequest{
		Image:        img,
		ExposedPorts: []string{"6379/tcp"},
		Cmd:          cfg.args,
		WaitingFor:   wait.ForLog("Ready to accept connections").WithStartupTimeout(30 * time.Second),
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("6379/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}},
			}
		},
	}
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	testcontainers.CleanupContainer(t, ctr, testcontainers.StopTimeout(time.Second))
	if err != nil {
		t.Fatalf("testredis: start %s: %v", img, err)
	}
	r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), ctr: ctr, api: dc.Client}
	// Runs before the container's removal (cleanups run last-in first-out):
	// a paused container cannot be stopped gracefully.
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.paused {
			ctx, cancel := r.ctx()
			defer cancel()
			_, _ = r.api.ContainerUnpause(ctx, r.ctr.GetContainerID(), client.ContainerUnpauseOptions{})
		}
	})
	r.waitPing(t)
	return r
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitPing polls PING until the server answers (it answers LOADING while
// it reads its persistence files).
func (r *Redis) waitPing(t testing.TB) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: %s did not answer PING within 30s: %v", r.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Redis) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// Stop stops the server (SIGTERM, then SIGKILL after 5 s). Without
// persistence its data is gone.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	timeout := 5
	if _, err := r.api.ContainerStop(ctx, r.ctr.GetContainerID(), client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatalf("testredis: stop: %v", err)
	}
}

// Start starts a stopped server again and waits until it answers.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	if _, err := r.api.ContainerStart(ctx, r.ctr.GetContainerID(), client.ContainerStartOptions{}); err != nil {
		t.Fatalf("testredis: start: %v", err)
	}
	r.waitPing(t)
}

// Restart stops and starts the server and waits until it answers.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Stop(t)
	r.Start(t)
}

// Pause freezes the server's process (docker pause): connections stay open
// but nothing is answered until Unpause.
func (r *Redis) Pause(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	if _, err := r.api.ContainerPause(ctx, r.ctr.GetContainerID(), client.ContainerPauseOptions{}); err != nil {
		t.Fatalf("testredis: pause: %v", err)
	}
	r.paused = true
}

// Unpause resumes a paused server.
func (r *Redis) Unpause(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	if _, err := r.api.ContainerUnpause(ctx, r.ctr.GetContainerID(), client.ContainerUnpauseOptions{}); err != nil {
		t.Fatalf("testredis: unpause: %v", err)
	}
	r.paused = false
}
