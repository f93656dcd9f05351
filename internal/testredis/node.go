package testredis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/redis/go-redis/v9"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

// netEnv is a Docker network of its own with a random 10.x.y.0/24 subnet,
// on which containers get fixed addresses that the host reaches directly
// (no port mapping). Servers that hand out their peers' addresses
// (sentinels, cluster nodes) then hand out addresses every client can use,
// and a node keeps its address across restarts and network cuts.
type netEnv struct {
	api  client.APIClient
	net  *testcontainers.DockerNetwork
	base [4]byte
}

// newNetEnv checks that Docker answers and the images are present
// (skipping or failing the test as unavailable does), and creates the
// network, removed at cleanup.
func newNetEnv(t testing.TB, ctx context.Context, images ...[2]string) *netEnv {
	t.Helper()
	dc, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		unavailable(t, "Docker is not reachable (%v); these tests need a Docker Engine", err)
	}
	t.Cleanup(func() { dc.Close() })
	for _, img := range images {
		if _, err := dc.ImageInspect(ctx, img[0]); err != nil {
			unavailable(t, "image %s is not present locally (%v); run %s to build it without a registry", img[0], err, img[1])
		}
	}
	e := &netEnv{api: dc.Client}
	for attempt := 0; ; attempt++ {
		prefix := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + rand.IntN(50)), byte(rand.IntN(256)), 0}), 24)
		e.net, err = tcnetwork.New(ctx, tcnetwork.WithIPAM(&network.IPAM{
			Config: []network.IPAMConfig{{Subnet: prefix}},
		}))
		if err == nil {
			e.base = prefix.Addr().As4()
			break
		}
		if attempt == 10 {
			t.Fatalf("testredis: create a network: %v", err)
		}
	}
	testcontainers.CleanupNetwork(t, e.net)
	return e
}

// addr returns the i-th fixed address of the network (from .10 on).
func (e *netEnv) addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{e.base[0], e.base[1], e.base[2], byte(10 + i)})
}

// start starts a container of img at ip with the arguments cmd, waits for
// the log line ready and registers its removal. Safe for concurrent use;
// it does not fail the test itself (so that it may run in a goroutine):
// the container, if any, is removed at cleanup whatever the error.
func (e *netEnv) start(t testing.TB, ctx context.Context, name string, ip netip.Addr, img string, port int, cmd []string, ready string) (*Node, error) {
	n := &Node{Name: name, Addr: net.JoinHostPort(ip.String(), fmt.Sprint(port)), env: e, ip: ip}
	req := testcontainers.ContainerRequest{
		Image:      img,
		Cmd:        cmd,
		Networks:   []string{e.net.Name},
		WaitingFor: wait.ForLog(ready).WithStartupTimeout(30 * time.Second),
		EndpointSettingsModifier: func(m map[string]*network.EndpointSettings) {
			m[e.net.Name] = &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}}
		},
	}
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	testcontainers.CleanupContainer(t, ctr, testcontainers.StopTimeout(time.Second))
	if err != nil {
		return nil, fmt.Errorf("testredis: start %s (%s): %w", name, img, err)
	}
	n.ctr = ctr
	t.Cleanup(func() { n.unpauseForCleanup() })
	return n, nil
}

// Node is one container of a Topology or a Cluster.
type Node struct {
	Name string
	Addr string // ip:port on the topology's network
	// ID is the node's Redis Cluster node ID (CLUSTER MYID), "" outside a
	// Cluster. It survives Kill and Start (nodes.conf is kept in the
	// container).
	ID string

	env *netEnv
	ctr testcontainers.Container
	ip  netip.Addr

	mu     sync.Mutex // serialises lifecycle changes
	paused bool
}

// Client returns a go-redis client of one node, closed at cleanup.
func (n *Node) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { c.Close() })
	return c
}

func (n *Node) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// Kill kills the node's process with SIGKILL: no shutdown, no RST from a
// process that closes its sockets (the container's network goes with it).
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.env.api.ContainerKill(ctx, n.ctr.GetContainerID(), client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
		t.Fatalf("testredis: kill %s: %v", n.Name, err)
	}
}

// Start starts a killed node again and waits until it answers: same
// address, no data unless WithPersistence. A Sentinel node rejoins as a
// replica once a sentinel reconfigures it; a Cluster node keeps its node ID
// and rejoins the cluster, as a replica if its slots were failed over.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.env.api.ContainerStart(ctx, n.ctr.GetContainerID(), client.ContainerStartOptions{}); err != nil {
		t.Fatalf("testredis: start %s: %v", n.Name, err)
	}
	(&Redis{Addr: n.Addr}).waitPing(t)
}

// Disconnect cuts the node off the network: packets to it are dropped, no
// RST is sent (the process keeps running and its connections stay open on
// its side).
func (n *Node) Disconnect(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.env.api.NetworkDisconnect(ctx, n.env.net.ID, client.NetworkDisconnectOptions{Container: n.ctr.GetContainerID(), Force: true}); err != nil {
		t.Fatalf("testredis: disconnect %s: %v", n.Name, err)
	}
}

// Connect puts a disconnected node back on the network, at its address.
func (n *Node) Connect(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.env.api.NetworkConnect(ctx, n.env.net.ID, client.NetworkConnectOptions{
		Container:      n.ctr.GetContainerID(),
		EndpointConfig: &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: n.ip}},
	}); err != nil {
		t.Fatalf("testredis: connect %s: %v", n.Name, err)
	}
}

// Pause freezes the node (docker pause): its connections stay open, nothing
// is answered, until Unpause.
func (n *Node) Pause(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.env.api.ContainerPause(ctx, n.ctr.GetContainerID(), client.ContainerPauseOptions{}); err != nil {
		t.Fatalf("testredis: pause %s: %v", n.Name, err)
	}
	n.paused = true
}

// Unpause resumes a paused node.
func (n *Node) Unpause(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	ctx, cancel := n.ctx()
	defer cancel()
	if _, err := n.env.api.ContainerUnpause(ctx, n.ctr.GetContainerID(), client.ContainerUnpauseOptions{}); err != nil {
		t.Fatalf("testredis: unpause %s: %v", n.Name, err)
	}
	n.paused = false
}

// unpauseForCleanup: a paused container cannot be stopped gracefully.
func (n *Node) unpauseForCleanup() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.paused {
		ctx, cancel := n.ctx()
		defer cancel()
		_, _ = n.env.api.ContainerUnpause(ctx, n.ctr.GetContainerID(), client.ContainerUnpauseOptions{})
		n.paused = false
	}
}
