package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// imagesScript prepares every image these tests use without a registry.
const imagesScript = "scripts/images.sh"

func init() {
	// The reaper image cannot be pulled; the exact string "true" disables it.
	if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Images, named like the official ones (scripts/images.sh builds local
// images under these names when the official ones are absent).
var (
	heraldImage  = envOr("HERALD_IMAGE", "herald:local")
	redisImage   = envOr("HERALD_REDIS_IMAGE", "redis:7-alpine")
	haproxyImage = envOr("HERALD_HAPROXY_IMAGE", "haproxy:2.6")
	nginxImage   = envOr("HERALD_NGINX_IMAGE", "nginx:1.22")
	promImage    = envOr("HERALD_PROMETHEUS_IMAGE", "prom/prometheus:v2.42.0")
)

// unavailable skips the test with a message, or fails it under CI=true.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("e2e: %s", msg)
	}
	t.Skipf("e2e: %s", msg)
}

// needDocker returns a Docker client after checking that the images exist
// locally (they are never pulled).
func needDocker(t testing.TB, images ...string) *testcontainers.DockerClient {
	t.Helper()
	// Opting out is for laptops; under CI=true it fails rather than hide
	// the end-to-end tests.
	if os.Getenv("HERALD_E2E") == "0" {
		unavailable(t, "HERALD_E2E=0 turns the end-to-end tests off")
	}
	if testing.Short() {
		unavailable(t, "-short turns the end-to-end tests off")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err == nil {
		_, err = dc.Ping(ctx, client.PingOptions{})
	}
	if err != nil {
		unavailable(t, "Docker is not reachable (%v); these tests need a Docker Engine", err)
	}
	t.Cleanup(func() { dc.Close() })
	for _, img := range images {
		if _, err := dc.ImageInspect(ctx, img); err != nil {
			unavailable(t, "image %s is not present locally (%v); run %s to build the images without a registry", img, err, imagesScript)
		}
	}
	return dc
}

// lbKind selects the load balancer in front of the replicas.
type lbKind string

const (
	haproxy lbKind = "haproxy"
	nginx   lbKind = "nginx"
)

func (k lbKind) image() string {
	if k == nginx {
		return nginxImage
	}
	return haproxyImage
}

// replica is one herald container. Its host port is fixed at creation, so
// it stays the same across stop/start.
type replica struct {
	Name string // network alias: herald1..3, as the LB configs name them
	URL  string // http://127.0.0.1:<port>, straight to this replica
	ctr  testcontainers.Container
}

// cluster is Redis + 3 herald replicas + a load balancer on one network.
type cluster struct {
	t        *testing.T
	api      client.APIClient
	LB       string // http://127.0.0.1:<port> of the load balancer
	lbStats  string // HAProxy's statistics page ("" for nginx)
	lbKind   lbKind
	Replicas []*replica
	Redis    *redis.Client // from the host, to the Redis container
	redisCtr testcontainers.Container

	mu     sync.Mutex
	paused bool
}

// heraldEnv is the replicas' configuration in these tests: short
// heartbeats and drain phases, room for every event in history, the admin
// key the status page uses (it grants nothing else).
func heraldEnv() map[string]string {
	return map[string]string{
		"HERALD_REDIS_URL":     "redis://redis:6379/0",
		"HERALD_PUBLISH_ALLOW": "true",
		"HERALD_ADMIN_KEY":     statusAdminKey,
		"HERALD_HEARTBEAT":     "2s",
		"HERALD_HISTORY_SIZE":  "10000",
		"HERALD_DRAIN_DELAY":   "2s",
		"HERALD_DRAIN_RETRY":   "300ms",
		"HERALD_DRAIN_TIMEOUT": "10s",
		"HERALD_LOG_LEVEL":     "info",
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func bindPort(containerPort string, hostPort int) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		hc.PortBindings = network.PortMap{
			network.MustParsePort(containerPort): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(hostPort)}},
		}
	}
}

// startCluster starts the topology and registers its removal (containers,
// then the network) with t.Cleanup. Logs of every container are printed
// when the test failed.
func startCluster(t *testing.T, lb lbKind) *cluster {
	t.Helper()
	dc := needDocker(t, heraldImage, redisImage, lb.image())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()

	nw, err := tcnetwork.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	c := &cluster{t: t, api: dc.Client, lbKind: lb}
	var all []testcontainers.Container
	t.Cleanup(func() {
		if t.Failed() {
			for _, ctr := range all {
				dumpLogs(t, ctr)
			}
		}
	})
	run := func(name string, req testcontainers.ContainerRequest) testcontainers.Container {
		req.Networks = []string{nw.Name}
		req.NetworkAliases = map[string][]string{nw.Name: {name}}
		ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
		testcontainers.CleanupContainer(t, ctr, testcontainers.StopTimeout(2*time.Second))
		if ctr != nil {
			all = append(all, ctr)
		}
		if err != nil {
			t.Fatalf("start %s (%s): %v", name, req.Image, err)
		}
		return ctr
	}

	// Redis, persisting to the container's /data (a pause must not lose
	// anything; it is never restarted here).
	redisPort := freePort(t)
	c.redisCtr = run("redis", testcontainers.ContainerRequest{
		Image:              redisImage,
		Cmd:                []string{"--appendonly", "yes", "--appendfsync", "everysec"},
		ExposedPorts:       []string{"6379/tcp"},
		HostConfigModifier: bindPort("6379/tcp", redisPort),
		WaitingFor:         wait.ForLog("Ready to accept connections").WithStartupTimeout(30 * time.Second),
	})
	// No retries inside go-redis: a publish the test makes is sent once, so
	// a failed FCALL was applied at most once.
	c.Redis = redis.NewClient(&redis.Options{
		Addr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(redisPort)),
		MaxRetries:  -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
	})
	t.Cleanup(func() { c.Redis.Close() })
	t.Cleanup(c.unpauseRedis) // runs before the containers' removal

	// Replicas, started together.
	c.Replicas = make([]*replica, 3)
	var wg sync.WaitGroup
	var startMu sync.Mutex
	for i := range c.Replicas {
		port := freePort(t)
		r := &replica{Name: fmt.Sprintf("herald%d", i+1), URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
		c.Replicas[i] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := testcontainers.ContainerRequest{
				Image:              heraldImage,
				Env:                heraldEnv(),
				ExposedPorts:       []string{"8080/tcp"},
				HostConfigModifier: bindPort("8080/tcp", port),
				WaitingFor:         wait.ForLog("herald listening").WithStartupTimeout(60 * time.Second),
			}
			req.Networks = []string{nw.Name}
			req.NetworkAliases = map[string][]string{nw.Name: {r.Name}}
			ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
			startMu.Lock()
			defer startMu.Unlock()
			testcontainers.CleanupContainer(t, ctr, testcontainers.StopTimeout(time.Second))
			if ctr != nil {
				all = append(all, ctr)
			}
			if err != nil {
				t.Errorf("start %s: %v", r.Name, err)
				return
			}
			r.ctr = ctr
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, r := range c.Replicas {
		c.waitReady(r, 30*time.Second)
	}

	// The load balancer, with the repository's reference config.
	lbPort := freePort(t)
	req := testcontainers.ContainerRequest{
		Image:        lb.image(),
		ExposedPorts: []string{"8080/tcp"},
		// No wait strategy: waitLB polls through the balancer itself.
	}
	switch lb {
	case haproxy:
		statsPort := freePort(t)
		req.ExposedPorts = append(req.ExposedPorts, "8404/tcp")
		req.Files = []testcontainers.ContainerFile{{HostFilePath: deployDir + "/haproxy/haproxy.cfg", ContainerFilePath: "/usr/local/etc/haproxy/haproxy.cfg", FileMode: 0o644}}
		req.HostConfigModifier = func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort("8080/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(lbPort)}},
				network.MustParsePort("8404/tcp"): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(statsPort)}},
			}
		}
		c.lbStats = fmt.Sprintf("http://127.0.0.1:%d/", statsPort)
	case nginx:
		req.Files = []testcontainers.ContainerFile{{HostFilePath: deployDir + "/nginx/nginx.conf", ContainerFilePath: "/etc/nginx/nginx.conf", FileMode: 0o644}}
		req.HostConfigModifier = bindPort("8080/tcp", lbPort)
	}
	run(string(lb), req)
	c.LB = fmt.Sprintf("http://127.0.0.1:%d", lbPort)
	c.waitLB(3, 30*time.Second)
	t.Logf("cluster up with %s in %v: LB %s, replicas %s %s %s", lb, time.Since(start).Round(time.Millisecond),
		c.LB, c.Replicas[0].URL, c.Replicas[1].URL, c.Replicas[2].URL)
	return c
}

func dumpLogs(t *testing.T, ctr testcontainers.Container) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(rc)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	name, _ := ctr.Name(ctx)
	t.Logf("--- last logs of %s ---\n%s", name, strings.Join(lines, "\n"))
}

// get returns the status and body of a GET, or an error.
func httpGet(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// poll calls cond every 100ms until it returns true or the deadline
// passes; then the test fails with what's message.
func poll(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitReady waits until the replica's own /readyz answers 200.
func (c *cluster) waitReady(r *replica, within time.Duration) {
	c.t.Helper()
	poll(c.t, within, r.Name+" /readyz", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		code, _, err := httpGet(ctx, r.URL+"/readyz")
		return err == nil && code == 200
	})
}

// waitLB waits until the load balancer forwards to n healthy replicas
// (HAProxy: n servers UP in its statistics; nginx has no health checks:
// a request through it succeeds).
func (c *cluster) waitLB(n int, within time.Duration) {
	c.t.Helper()
	poll(c.t, within, fmt.Sprintf("%s with %d replicas up", c.lbKind, n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c.lbStats == "" {
			code, _, err := httpGet(ctx, c.LB+"/readyz")
			return err == nil && code == 200
		}
		return c.upServers(ctx) == n
	})
}

// upServers counts the herald servers HAProxy has UP.
func (c *cluster) upServers(ctx context.Context) int {
	code, body, err := httpGet(ctx, c.lbStats+";csv")
	if err != nil || code != 200 {
		return -1
	}
	n := 0
	for _, line := range strings.Split(body, "\n") {
		f := strings.Split(line, ",")
		if len(f) > 17 && f[0] == "herald" && strings.HasPrefix(f[1], "herald") && f[17] == "UP" {
			n++
		}
	}
	return n
}

// Connections returns a replica's open streams (herald_connections), or
// -1 when it does not answer.
func (r *replica) Connections(ctx context.Context) int {
	code, body, err := httpGet(ctx, r.URL+"/metrics")
	if err != nil || code != 200 {
		return -1
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "herald_connections "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

func (c *cluster) dockerCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// Kill sends SIGKILL to a replica.
func (c *cluster) Kill(r *replica) {
	c.t.Helper()
	ctx, cancel := c.dockerCtx()
	defer cancel()
	if _, err := c.api.ContainerKill(ctx, r.ctr.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		c.t.Fatalf("kill %s: %v", r.Name, err)
	}
	c.waitExited(r)
}

// Stop sends SIGTERM to a replica and waits until it has exited; it
// returns the exit code and how long the drain took.
func (c *cluster) Stop(r *replica) (int, time.Duration) {
	c.t.Helper()
	ctx, cancel := c.dockerCtx()
	defer cancel()
	timeout := 30
	start := time.Now()
	if _, err := c.api.ContainerStop(ctx, r.ctr.GetContainerID(), client.ContainerStopOptions{Signal: "SIGTERM", Timeout: &timeout}); err != nil {
		c.t.Fatalf("stop %s: %v", r.Name, err)
	}
	took := time.Since(start)
	return c.waitExited(r), took
}

func (c *cluster) waitExited(r *replica) int {
	c.t.Helper()
	code := -1
	poll(c.t, 30*time.Second, r.Name+" to exit", func() bool {
		ctx, cancel := c.dockerCtx()
		defer cancel()
		res, err := c.api.ContainerInspect(ctx, r.ctr.GetContainerID(), client.ContainerInspectOptions{})
		if err != nil || res.Container.State == nil || res.Container.State.Running {
			return false
		}
		code = res.Container.State.ExitCode
		return true
	})
	return code
}

// Start starts a stopped replica again and waits until it is ready.
func (c *cluster) Start(r *replica) {
	c.t.Helper()
	ctx, cancel := c.dockerCtx()
	defer cancel()
	if _, err := c.api.ContainerStart(ctx, r.ctr.GetContainerID(), client.ContainerStartOptions{}); err != nil {
		c.t.Fatalf("start %s: %v", r.Name, err)
	}
	c.waitReady(r, 30*time.Second)
}

// PauseRedis freezes Redis (docker pause) until UnpauseRedis.
func (c *cluster) PauseRedis() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := c.dockerCtx()
	defer cancel()
	if _, err := c.api.ContainerPause(ctx, c.redisCtr.GetContainerID(), client.ContainerPauseOptions{}); err != nil {
		c.t.Fatalf("pause redis: %v", err)
	}
	c.paused = true
}

func (c *cluster) unpauseRedis() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.paused {
		return
	}
	ctx, cancel := c.dockerCtx()
	defer cancel()
	if _, err := c.api.ContainerUnpause(ctx, c.redisCtr.GetContainerID(), client.ContainerUnpauseOptions{}); err != nil {
		c.t.Errorf("unpause redis: %v", err)
		return
	}
	c.paused = false
}

// UnpauseRedis resumes a paused Redis.
func (c *cluster) UnpauseRedis() { c.unpauseRedis() }
