package e2e

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// withDefaults replaces every ${VAR:-default} of s by its default (what
// compose does with the variable unset).
func withDefaults(s string) string {
	return composeVar.ReplaceAllStringFunc(s, func(m string) string { return composeVar.FindStringSubmatch(m)[3] })
}

// composeServices decodes a compose file's services.
func composeServices(t *testing.T, file string) map[string]any {
	t.Helper()
	docs := decodeAll(t, filepath.Join(deployDir, file))
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents", file, len(docs))
	}
	services, _ := get(docs[0], "services").(map[string]any)
	if len(services) == 0 {
		t.Fatalf("%s: no services", file)
	}
	return services
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, len(l))
	for i, x := range l {
		out[i] = str(x)
	}
	return out
}

// TestManifestsComposeHA checks compose.sentinel.yaml and
// compose.cluster.yaml without running them: three herald replicas
// configured as in compose.yaml but for the Redis URL (the server accepts
// the configuration), images from the same variables with the same
// defaults, and a Redis topology that matches the URL — the sentinels are
// the URL's and monitor its master name at the primary's address, which
// the replicas follow; the cluster URL names every node and the init
// creates the cluster of exactly those nodes; every Redis server's and
// sentinel's fixed address is distinct, in the subnet, outside the range
// other containers get.
func TestManifestsComposeHA(t *testing.T) {
	known := knownEnv(t)
	base := composeServices(t, "compose.yaml")
	baseEnv := map[string]string{}
	for k, v := range get(base["herald1"], "environment").(map[string]any) {
		baseEnv[k] = str(v)
	}
	baseImages := map[string]string{} // variable -> default
	for _, svc := range base {
		if m := composeVar.FindStringSubmatch(str(get(svc, "image"))); m != nil {
			baseImages[m[1]] = m[3]
		}
	}

	for _, file := range []string{"compose.sentinel.yaml", "compose.cluster.yaml"} {
		t.Run(file, func(t *testing.T) {
			services := composeServices(t, file)
			var replicas []string
			var url string
			var cluster bool
			for name, svc := range services {
				img := str(get(svc, "image"))
				m := composeVar.FindStringSubmatch(img)
				if m == nil || m[3] == "" {
					t.Errorf("%s: image %q: want ${VAR:-default}", name, img)
				} else if def, ok := baseImages[m[1]]; ok && def != m[3] {
					t.Errorf("%s: image %q: compose.yaml's default for %s is %q", name, img, m[1], def)
				} else if !ok && m[1] != "HERALD_SENTINEL_IMAGE" {
					t.Errorf("%s: image variable %s is not one of compose.yaml's", name, m[1])
				}
				for _, v := range strList(get(svc, "volumes")) {
					if src := strings.Split(v, ":")[0]; strings.HasPrefix(src, "./") {
						if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
							t.Errorf("%s mounts %s: %v", name, src, err)
						}
					}
				}
				if !strings.HasPrefix(name, "herald") {
					continue
				}
				replicas = append(replicas, name)
				env := map[string]string{}
				for k, v := range get(svc, "environment").(map[string]any) {
					env[k] = str(v)
				}
				cfg := checkEnv(t, file+" "+name, env, known)
				if g, err := time.ParseDuration(str(get(svc, "stop_grace_period"))); err != nil || g <= cfg.DrainTimeout {
					t.Errorf("%s: stop_grace_period %q must exceed the drain timeout %v", name, str(get(svc, "stop_grace_period")), cfg.DrainTimeout)
				}
				// Everything but the Redis topology as in compose.yaml.
				rest := maps.Clone(env)
				delete(rest, "HERALD_REDIS_URL")
				delete(rest, "HERALD_REDIS_CLUSTER")
				wantRest := maps.Clone(baseEnv)
				delete(wantRest, "HERALD_REDIS_URL")
				if !maps.Equal(rest, wantRest) {
					t.Errorf("%s: environment %v, want compose.yaml's %v (but the Redis URL)", name, rest, wantRest)
				}
				if url != "" && (cfg.RedisURL != url || cfg.RedisCluster != cluster) {
					t.Errorf("%s: Redis URL %q (cluster %v), another replica has %q (%v)", name, cfg.RedisURL, cfg.RedisCluster, url, cluster)
				}
				url, cluster = cfg.RedisURL, cfg.RedisCluster
			}
			slices.Sort(replicas)
			if !slices.Equal(replicas, []string{"herald1", "herald2", "herald3"}) {
				t.Fatalf("herald replicas = %v, want herald1..3 (haproxy.cfg names them)", replicas)
			}
			if file == "compose.sentinel.yaml" {
				checkSentinelCompose(t, services, url, cluster)
			} else {
				checkClusterCompose(t, services, url, cluster)
			}
		})
	}
}

func checkSentinelCompose(t *testing.T, services map[string]any, url string, cluster bool) {
	t.Helper()
	opt, err := redis.ParseFailoverURL(url)
	if err != nil || cluster {
		t.Fatalf("HERALD_REDIS_URL %q: %v (cluster %v), want a Sentinel URL", url, err, cluster)
	}
	ips := fixedAddresses(t, services, "compose.sentinel.yaml", func(name string) bool {
		return strings.HasPrefix(name, "redis") || strings.HasPrefix(name, "sentinel")
	})
	var sentinels, primaries, replicas []string
	primaryAt := map[string]bool{} // addresses the sentinels monitor and the replicas follow
	for name, svc := range services {
		args := strList(get(svc, "command"))
		switch {
		case strings.HasPrefix(name, "sentinel"):
			sentinels = append(sentinels, name+":26379")
			if i := slices.Index(args, "monitor"); i < 0 || i+4 >= len(args) || args[i+1] != opt.MasterName {
				t.Errorf("%s: %v does not monitor %q", name, args, opt.MasterName)
			} else {
				primaryAt[withDefaults(args[i+2])] = true
			}
		case strings.HasPrefix(name, "redis"):
			if k := slices.Index(args, "--replicaof"); k >= 0 {
				replicas = append(replicas, name)
				primaryAt[withDefaults(args[k+1])] = true
			} else {
				primaries = append(primaries, name)
			}
		}
	}
	slices.Sort(sentinels)
	if got := slices.Sorted(slices.Values(opt.SentinelAddrs)); !slices.Equal(got, sentinels) || len(sentinels) != 3 {
		t.Errorf("the URL's sentinels %v, the file's %v: want the same three", got, sentinels)
	}
	if len(primaries) != 1 || len(replicas) != 2 {
		t.Fatalf("primaries %v, replicas %v: want 1 and 2", primaries, replicas)
	}
	want := ""
	for ip, name := range ips {
		if name == primaries[0] {
			want = ip.String()
		}
	}
	if len(primaryAt) != 1 || !primaryAt[want] {
		t.Errorf("the sentinels monitor and the replicas follow %v, want %s's address %s", slices.Collect(maps.Keys(primaryAt)), primaries[0], want)
	}
}

// fixedAddresses returns the fixed addresses on the network "back" of the
// services that pick selects, checking that each has one, that they are
// distinct, and that they lie in the network's subnet outside the range
// other containers get addresses from.
func fixedAddresses(t *testing.T, services map[string]any, file string, pick func(string) bool) map[netip.Addr]string {
	t.Helper()
	doc := decodeAll(t, filepath.Join(deployDir, file))[0]
	cfgs, _ := get(doc, "networks", "back", "ipam", "config").([]any)
	if len(cfgs) != 1 {
		t.Fatalf("%s: network back: ipam config %v, want one subnet", file, cfgs)
	}
	subnet, err1 := netip.ParsePrefix(withDefaults(str(get(cfgs[0], "subnet"))))
	dynamic, err2 := netip.ParsePrefix(withDefaults(str(get(cfgs[0], "ip_range"))))
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: network back: subnet %v, ip_range %v", file, err1, err2)
	}
	ips := map[netip.Addr]string{}
	for name, svc := range services {
		if !pick(name) {
			continue
		}
		ip, err := netip.ParseAddr(withDefaults(str(get(svc, "networks", "back", "ipv4_address"))))
		if err != nil {
			t.Errorf("%s: no fixed address on back: %v", name, err)
			continue
		}
		if other, dup := ips[ip]; dup {
			t.Errorf("%s and %s both at %s", name, other, ip)
		}
		if !subnet.Contains(ip) || dynamic.Contains(ip) {
			t.Errorf("%s at %s: want it in %s, outside %s (where other containers get addresses)", name, ip, subnet, dynamic)
		}
		ips[ip] = name
	}
	return ips
}

func checkClusterCompose(t *testing.T, services map[string]any, url string, cluster bool) {
	t.Helper()
	opt, err := redis.ParseClusterURL(url)
	if err != nil || !cluster {
		t.Fatalf("HERALD_REDIS_URL %q: %v (HERALD_REDIS_CLUSTER %v), want a cluster URL with cluster mode", url, err, cluster)
	}
	isNode := func(name string) bool {
		return slices.Contains(strList(get(services[name], "command")), "--cluster-enabled")
	}
	fixedAddresses(t, services, "compose.cluster.yaml", isNode)
	var nodes []string
	for name := range services {
		if isNode(name) {
			nodes = append(nodes, name+":6379")
		}
	}
	slices.Sort(nodes)
	if got := slices.Sorted(slices.Values(opt.Addrs)); !slices.Equal(got, nodes) || len(nodes) != 6 {
		t.Errorf("the URL's nodes %v, the file's cluster nodes %v: want the same six", got, nodes)
	}
	init := strings.Join(strList(get(services["redis-init"], "command")), " ")
	for _, n := range nodes {
		if !strings.Contains(init, strings.TrimSuffix(n, ":6379")) {
			t.Errorf("redis-init does not name %s", n)
		}
	}
	if !strings.Contains(init, "--cluster-replicas 1") {
		t.Errorf("redis-init: %q does not create one replica per primary", init)
	}
	for _, h := range replicasOf(services) {
		if c := str(get(services[h], "depends_on", "redis-init", "condition")); c != "service_completed_successfully" {
			t.Errorf("%s starts on redis-init's %q, want service_completed_successfully", h, c)
		}
	}
}

func replicasOf(services map[string]any) []string {
	var out []string
	for name := range services {
		if strings.HasPrefix(name, "herald") {
			out = append(out, name)
		}
	}
	return out
}
