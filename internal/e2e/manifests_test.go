package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/herald-sse/herald/internal/server"
)

const deployDir = "../../deployments"

// knownEnv returns every environment variable the server reads, by asking
// its configuration parser which names it looks up.
func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	_, err := server.ParseConfig(nil, func(name string) string {
		known[name] = true
		return ""
	}, io.Discard)
	if err != nil {
		t.Fatalf("default configuration: %v", err)
	}
	if len(known) < 10 || !known["HERALD_REDIS_URL"] {
		t.Fatalf("the server looked up only %v: cannot derive its variables", known)
	}
	return known
}

// checkEnv fails for every HERALD_* name the server does not know, then
// parses the whole set as the server would and returns the configuration.
func checkEnv(t *testing.T, where string, env map[string]string, known map[string]bool) server.Config {
	t.Helper()
	for name := range env {
		if strings.HasPrefix(name, server.EnvPrefix) && !known[name] {
			t.Errorf("%s sets %s, which the server does not read (a typo, or a removed setting)", where, name)
		}
	}
	cfg, err := server.ParseConfig(nil, func(n string) string { return env[n] }, io.Discard)
	if err != nil {
		t.Fatalf("%s: the server would refuse this configuration: %v", where, err)
	}
	return cfg
}

// decodeAll reads every YAML document of a file.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// get walks a decoded document: get(doc, "spec", "template", "spec").
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

func num(t *testing.T, what string, v any) int {
	t.Helper()
	n, ok := v.(int)
	if !ok {
		t.Fatalf("%s: want an integer, got %#v", what, v)
	}
	return n
}

func labelsMatch(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if str(lab[k]) != str(v) {
			return false
		}
	}
	return true
}

// probeServer serves the real routes (in-memory broker) and returns its
// base URL, to check that the probes' paths answer 200.
func probeServer(t *testing.T) string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DrainDelay = 0
	s, err := server.New(context.Background(), cfg, server.Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return "http://" + ln.Addr().String()
}

func TestManifestsKubernetes(t *testing.T) {
	known := knownEnv(t)
	dir := filepath.Join(deployDir, "k8s")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s (%v)", dir, err)
	}
	byKind := map[string][]map[string]any{}
	var kustomization map[string]any
	for _, f := range files {
		for _, doc := range decodeAll(t, f) {
			kind := str(doc["kind"])
			if kind == "" || str(doc["apiVersion"]) == "" {
				t.Errorf("%s: a document without kind or apiVersion", f)
				continue
			}
			if kind == "Kustomization" {
				kustomization = doc
				continue
			}
			if str(get(doc, "metadata", "name")) == "" {
				t.Errorf("%s: %s without metadata.name", f, kind)
			}
			byKind[kind] = append(byKind[kind], doc)
		}
	}

	// The kustomization lists every other file.
	if kustomization == nil {
		t.Fatal("no kustomization.yaml")
	}
	var listed []string
	for _, r := range get(kustomization, "resources").([]any) {
		listed = append(listed, str(r))
	}
	for _, f := range files {
		base := filepath.Base(f)
		if base != "kustomization.yaml" && !slices.Contains(listed, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
	for _, r := range listed {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}

	named := func(kind, name string) map[string]any {
		for _, d := range byKind[kind] {
			if str(get(d, "metadata", "name")) == name {
				return d
			}
		}
		t.Fatalf("no %s named %s", kind, name)
		return nil
	}
	dep := named("Deployment", "herald")
	if n := num(t, "replicas", get(dep, "spec", "replicas")); n != 3 {
		t.Errorf("Deployment replicas = %d, want 3", n)
	}
	pod := get(dep, "spec", "template")
	if !labelsMatch(get(dep, "spec", "selector", "matchLabels"), get(pod, "metadata", "labels")) {
		t.Error("the Deployment's selector does not match its pod labels")
	}
	ctrs, _ := get(pod, "spec", "containers").([]any)
	if len(ctrs) != 1 {
		t.Fatalf("want one container, got %d", len(ctrs))
	}
	ctr := ctrs[0]

	// The environment: envFrom ConfigMaps and Secrets, then env.
	env := map[string]string{}
	envFrom, _ := get(ctr, "envFrom").([]any)
	for _, ef := range envFrom {
		if name := str(get(ef, "configMapRef", "name")); name != "" {
			for k, v := range get(named("ConfigMap", name), "data").(map[string]any) {
				env[k] = str(v)
			}
		}
		if name := str(get(ef, "secretRef", "name")); name != "" {
			sec := named("Secret", name)
			data, _ := get(sec, "stringData").(map[string]any)
			if len(data) == 0 {
				t.Fatalf("Secret %s: expected stringData", name)
			}
			for k, v := range data {
				env[k] = str(v)
			}
		}
	}
	envList, _ := get(ctr, "env").([]any)
	for _, e := range envList {
		name := str(get(e, "name"))
		if v := get(e, "value"); v != nil {
			env[name] = str(v)
		} else if strings.HasPrefix(name, server.EnvPrefix) {
			t.Errorf("env %s comes from valueFrom; give HERALD_* settings literal values so the test can check them", name)
		}
	}
	if env["HERALD_REDIS_URL"] == "" {
		t.Error("the replicas get no HERALD_REDIS_URL: they would not share topics")
	}
	cfg := checkEnv(t, "Deployment herald", env, known)

	// Ports: the named port is the one the server listens on.
	_, port, _ := net.SplitHostPort(cfg.Addr)
	ports := map[string]int{}
	for _, p := range get(ctr, "ports").([]any) {
		ports[str(get(p, "name"))] = num(t, "containerPort", get(p, "containerPort"))
	}
	if strconv.Itoa(ports["http"]) != port {
		t.Errorf("containerPort http = %d, the server listens on %s", ports["http"], cfg.Addr)
	}

	// Probes point at real endpoints that answer 200 on a running server.
	base := probeServer(t)
	wantPath := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
	for probe, want := range wantPath {
		p := get(ctr, probe)
		if p == nil {
			if probe == "startupProbe" {
				continue
			}
			t.Errorf("no %s", probe)
			continue
		}
		path := str(get(p, "httpGet", "path"))
		if path != want {
			t.Errorf("%s path = %q, want %q (liveness and readiness must not depend on Redis)", probe, path, want)
		}
		if pp := str(get(p, "httpGet", "port")); pp != "http" && pp != port {
			t.Errorf("%s port = %q, not the server's port", probe, pp)
		}
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("%s: GET %s: %v", probe, path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET %s on a running server answered %d", probe, path, resp.StatusCode)
		}
	}

	// Shutdown budget: preStop + the server's drain deadline fit in the
	// grace period, or the kubelet kills replicas mid-drain.
	grace := num(t, "terminationGracePeriodSeconds", get(pod, "spec", "terminationGracePeriodSeconds"))
	preStop := 0
	if s := get(ctr, "lifecycle", "preStop", "sleep", "seconds"); s != nil {
		preStop = num(t, "preStop.sleep.seconds", s)
	} else if get(ctr, "lifecycle", "preStop", "exec") != nil {
		t.Error("preStop uses exec, but the image has no shell or sleep binary")
	}
	if preStop == 0 && cfg.DrainDelay < 3*time.Second {
		t.Errorf("no preStop sleep and a drain delay of %v: endpoint removal races with SIGTERM", cfg.DrainDelay)
	}
	if need := time.Duration(preStop)*time.Second + cfg.DrainTimeout; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d <= preStop %ds + drain timeout %v", grace, preStop, cfg.DrainTimeout)
	}

	// Resources and a non-root, read-only container.
	for _, r := range []string{"cpu", "memory"} {
		if get(ctr, "resources", "requests", r) == nil {
			t.Errorf("no resources.requests.%s", r)
		}
	}
	if get(ctr, "resources", "limits", "memory") == nil {
		t.Error("no memory limit")
	}
	if get(pod, "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if get(ctr, "securityContext", "readOnlyRootFilesystem") != true {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if get(ctr, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("allowPrivilegeEscalation is not false")
	}

	// Service and PodDisruptionBudget select the pods.
	svc := named("Service", "herald")
	if !labelsMatch(get(svc, "spec", "selector"), get(pod, "metadata", "labels")) {
		t.Error("Service herald does not select the herald pods")
	}
	for _, p := range get(svc, "spec", "ports").([]any) {
		tp := str(get(p, "targetPort"))
		if _, ok := ports[tp]; !ok && tp != port {
			t.Errorf("Service targetPort %q is not a container port", tp)
		}
	}
	pdb := named("PodDisruptionBudget", "herald")
	if !labelsMatch(get(pdb, "spec", "selector", "matchLabels"), get(pod, "metadata", "labels")) {
		t.Error("the PodDisruptionBudget does not select the herald pods")
	}
	if m := get(pdb, "spec", "minAvailable"); m != nil && num(t, "minAvailable", m) >= 3 {
		t.Error("minAvailable >= replicas: no voluntary disruption could ever proceed")
	}

	// The example Redis is what HERALD_REDIS_URL names.
	rsvc := named("Service", "redis")
	if !strings.Contains(env["HERALD_REDIS_URL"], "//"+str(get(rsvc, "metadata", "name"))+":") {
		t.Errorf("HERALD_REDIS_URL %q does not name the redis Service", env["HERALD_REDIS_URL"])
	}
}

var (
	composeVar = regexp.MustCompile(`\$\{([A-Z_]+)(:-([^}]*))?\}`)
	duration   = regexp.MustCompile(`^\s*timeout\s+(client|server)\s+(\S+)`)
	readTO     = regexp.MustCompile(`proxy_read_timeout\s+(\S+);`)
)

func TestManifestsCompose(t *testing.T) {
	known := knownEnv(t)
	docs := decodeAll(t, filepath.Join(deployDir, "compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("compose.yaml: %d documents", len(docs))
	}
	services, _ := get(docs[0], "services").(map[string]any)
	var replicas []string
	for name, svc := range services {
		envMap, _ := get(svc, "environment").(map[string]any)
		if len(envMap) == 0 {
			continue
		}
		env := map[string]string{}
		for k, v := range envMap {
			env[k] = str(v)
		}
		if !strings.HasPrefix(name, "herald") {
			continue
		}
		replicas = append(replicas, name)
		cfg := checkEnv(t, "compose service "+name, env, known)
		if !cfg.PublishAllow {
			t.Errorf("%s: without HERALD_PUBLISH_ALLOW nobody can publish through the load balancer", name)
		}
		if cfg.RedisURL == "" {
			t.Errorf("%s: no HERALD_REDIS_URL", name)
		}
		if g, err := time.ParseDuration(str(get(svc, "stop_grace_period"))); err != nil || g <= cfg.DrainTimeout {
			t.Errorf("%s: stop_grace_period %q must exceed the drain timeout %v", name, str(get(svc, "stop_grace_period")), cfg.DrainTimeout)
		}
		if img := str(get(svc, "image")); !composeVar.MatchString(img) {
			t.Errorf("%s: image %q does not come from an environment variable", name, img)
		}
	}
	slices.Sort(replicas)
	if !slices.Equal(replicas, []string{"herald1", "herald2", "herald3"}) {
		t.Errorf("herald replicas = %v, want herald1..3 (the load balancer configs name them)", replicas)
	}
	for _, lb := range []string{"haproxy", "nginx", "redis", "prometheus"} {
		img := str(get(services[lb], "image"))
		m := composeVar.FindStringSubmatch(img)
		if m == nil || m[3] == "" {
			t.Errorf("%s: image %q: want ${VAR:-official default}", lb, img)
		}
		vols, _ := get(services[lb], "volumes").([]any)
		for _, v := range vols {
			src := strings.Split(str(v), ":")[0]
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join(deployDir, src)); err != nil {
					t.Errorf("%s mounts %s: %v", lb, src, err)
				}
			}
		}
	}
	// Prometheus scrapes the three replicas and loads the rules it mounts.
	pdocs := decodeAll(t, filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	if len(pdocs) != 1 {
		t.Fatalf("prometheus.yml: %d documents", len(pdocs))
	}
	if got := fmt.Sprint(get(pdocs[0], "rule_files")); got != "[/etc/prometheus/herald-rules.yml]" {
		t.Errorf("prometheus.yml rule_files %s", got)
	}
	mounted := fmt.Sprint(get(services["prometheus"], "volumes"))
	for _, m := range []string{"./prometheus/herald-rules.yml:/etc/prometheus/herald-rules.yml", "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml"} {
		if !strings.Contains(mounted, m) {
			t.Errorf("compose prometheus does not mount %s", m)
		}
	}
	scrapes, _ := get(pdocs[0], "scrape_configs").([]any)
	if len(scrapes) != 1 || fmt.Sprint(get(scrapes[0], "static_configs")) != "[map[targets:[herald1:8080 herald2:8080 herald3:8080]]]" {
		t.Errorf("prometheus.yml scrape_configs %v, want herald1..3:8080", scrapes)
	}
	if v := get(docs[0], "volumes", "redis-data"); v == nil && get(docs[0], "volumes") == nil {
		t.Error("Redis has no volume: streams would not survive a restart")
	}
}

// TestManifestsLoadBalancers checks the idle timeouts of both reference
// configs against the heartbeat the deployments use.
func TestManifestsLoadBalancers(t *testing.T) {
	heartbeat := server.DefaultConfig().Heartbeat
	hap, err := os.ReadFile(filepath.Join(deployDir, "haproxy", "haproxy.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, line := range strings.Split(string(hap), "\n") {
		if m := duration.FindStringSubmatch(line); m != nil {
			found++
			d, err := time.ParseDuration(m[2])
			if err != nil {
				t.Fatalf("haproxy.cfg: timeout %s %q: %v", m[1], m[2], err)
			}
			if d <= 2*heartbeat {
				t.Errorf("haproxy.cfg: timeout %s %v is not well above the heartbeat %v", m[1], d, heartbeat)
			}
		}
	}
	if found < 2 {
		t.Error("haproxy.cfg: timeout client/server not found")
	}
	for _, want := range []string{"http-check send meth GET uri /readyz", "retry-on conn-failure empty-response 503", "option redispatch", "balance leastconn"} {
		if !strings.Contains(string(hap), want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	ngx, err := os.ReadFile(filepath.Join(deployDir, "nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	m := readTO.FindStringSubmatch(string(ngx))
	if m == nil {
		t.Fatal("nginx.conf: no proxy_read_timeout")
	}
	if d, err := time.ParseDuration(m[1]); err != nil || d <= 2*heartbeat {
		t.Errorf("nginx.conf: proxy_read_timeout %s is not well above the heartbeat %v", m[1], heartbeat)
	}
	for _, want := range []string{"proxy_buffering off;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_next_upstream error timeout http_503;", "gzip off;"} {
		if !strings.Contains(string(ngx), want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
}
