package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const chartDir = "../../deployments/helm/herald"

// helmBinary finds the Helm CLI: $HERALD_HELM (make helm builds it and
// make test passes it on), else the one make helm leaves in bin/tools,
// else helm on PATH.
func helmBinary(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("HERALD_HELM")}
	if m, _ := filepath.Glob("../../bin/tools/helm-v*"); len(m) > 0 {
		candidates = append(candidates, m[len(m)-1])
	}
	if p, err := exec.LookPath("helm"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); c != "" && err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			abs, err := filepath.Abs(c)
			if err != nil {
				t.Fatal(err)
			}
			return abs
		}
	}
	unavailable(t, "no Helm CLI (run make helm, which builds it from the module proxy, or set HERALD_HELM)")
	return ""
}

// helm runs the CLI with homes of its own, so no user repository or plugin
// is involved and nothing is fetched.
func helm(t *testing.T, bin string, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.Bytes(), errors.New(strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

func decodeDocs(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// Stand-ins for Secrets the chart refers to but does not create
// (existingSecret): valid values of the kind the server expects.
var externalSecretSamples = map[string]string{
	"HERALD_REDIS_URL":  "redis://:password@redis:6379/0",
	"HERALD_JWT_SECRET": strings.Repeat("x", 32),
	"HERALD_API_KEY":    strings.Repeat("k", 16),
	"HERALD_ADMIN_KEY":  strings.Repeat("a", 16),
}

// TestHelm renders the chart with its defaults and with every option on,
// and checks the manifests as TestManifestsKubernetes checks the plain
// ones: HERALD_* settings known to the server and accepted by its parser,
// probes on endpoints that answer 200, the drain inside the grace period,
// memory sized from the streams a replica may hold, the optional objects
// pointing at the right things.
func TestHelm(t *testing.T) {
	bin := helmBinary(t)
	known := knownEnv(t)
	exported := exportedMetrics(t)
	base := probeServer(t)

	for _, c := range []struct {
		name, values string
		want         map[string]bool // optional kinds rendered
	}{
		{"defaults", "", map[string]bool{"PodDisruptionBudget": true}},
		{"options", "ci/options-values.yaml", map[string]bool{"PodDisruptionBudget": true, "HorizontalPodAutoscaler": true, "ServiceMonitor": true, "PrometheusRule": true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			if c.values != "" {
				args = append(args, "-f", filepath.Join(chartDir, c.values))
			}
			if out, err := helm(t, bin, args...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			args = []string{"template", "herald", chartDir}
			if c.values != "" {
				args = append(args, "-f", filepath.Join(chartDir, c.values))
			}
			out, err := helm(t, bin, args...)
			if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			checkChart(t, decodeDocs(t, out), c.want, known, exported, base)
		})
	}

	// The chart refuses a grace period that cannot hold the drain, and
	// contradictory credentials.
	for _, set := range [][]string{
		{"terminationGracePeriodSeconds=20"},
		{"drain.timeoutSeconds=40", "terminationGracePeriodSeconds=30"},
		{"auth.jwtSecret=" + strings.Repeat("x", 32), "auth.jwtPublicKey=pem"},
		{"redis.url="},
		{"config.max-connections=5"},
		{"sizing.maxConnections=0"},
	} {
		args := []string{"template", "herald", chartDir}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		if _, err := helm(t, bin, args...); err == nil {
			t.Errorf("helm template --set %s: rendered, want a refusal", strings.Join(set, " --set "))
		} else if !strings.Contains(err.Error(), "execution error") {
			t.Errorf("--set %s: %v", strings.Join(set, " --set "), err)
		}
	}
}

func checkChart(t *testing.T, docs []map[string]any, want map[string]bool, known, exported map[string]bool, base string) {
	byKind := map[string][]map[string]any{}
	for _, d := range docs {
		kind := str(d["kind"])
		if kind == "" || str(d["apiVersion"]) == "" || str(get(d, "metadata", "name")) == "" {
			t.Errorf("a document without kind, apiVersion or name: %v", d)
			continue
		}
		byKind[kind] = append(byKind[kind], d)
	}
	for _, k := range []string{"PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"} {
		if got := len(byKind[k]) == 1; got != want[k] {
			t.Errorf("%s rendered: %v, want %v", k, got, want[k])
		}
	}
	one := func(kind string) map[string]any {
		if len(byKind[kind]) != 1 {
			t.Fatalf("%d %s, want 1", len(byKind[kind]), kind)
		}
		return byKind[kind][0]
	}
	named := func(kind, name string) map[string]any {
		for _, d := range byKind[kind] {
			if str(get(d, "metadata", "name")) == name {
				return d
			}
		}
		return nil
	}
	dep := one("Deployment")
	pod := get(dep, "spec", "template")
	podLabels := get(pod, "metadata", "labels")
	if !labelsMatch(get(dep, "spec", "selector", "matchLabels"), podLabels) {
		t.Error("the Deployment's selector does not match its pod labels")
	}
	hpa := named("HorizontalPodAutoscaler", str(get(dep, "metadata", "name")))
	if replicas := get(dep, "spec", "replicas"); hpa == nil && num(t, "replicas", replicas) < 2 {
		t.Errorf("replicas = %v: one replica cannot drain to another", replicas)
	} else if hpa != nil && replicas != nil {
		t.Error("with the HPA on, the Deployment sets replicas too (every upgrade would reset the HPA's count)")
	}
	ctrs, _ := get(pod, "spec", "containers").([]any)
	if len(ctrs) != 1 {
		t.Fatalf("want one container, got %d", len(ctrs))
	}
	ctr := ctrs[0]

	// The environment as the pod gets it: ConfigMaps, then env with
	// literal values or Secret references.
	env := map[string]string{}
	for _, ef := range sliceOf(get(ctr, "envFrom")) {
		if name := str(get(ef, "configMapRef", "name")); name != "" {
			cm := named("ConfigMap", name)
			if cm == nil {
				t.Fatalf("envFrom names ConfigMap %s, which the chart does not render", name)
			}
			for k, v := range get(cm, "data").(map[string]any) {
				env[k] = str(v)
			}
		}
		if get(ef, "secretRef") != nil {
			t.Error("envFrom a whole Secret: the test cannot tell its keys; use env with secretKeyRef")
		}
	}
	for _, e := range sliceOf(get(ctr, "env")) {
		name := str(get(e, "name"))
		if v := get(e, "value"); v != nil {
			env[name] = str(v)
			continue
		}
		ref := get(e, "valueFrom", "secretKeyRef")
		if ref == nil {
			t.Errorf("env %s: neither a value nor a secretKeyRef", name)
			continue
		}
		sec := named("Secret", str(get(ref, "name")))
		if sec == nil {
			sample, ok := externalSecretSamples[name]
			if !ok {
				t.Errorf("env %s refers to Secret %s outside the chart, and the test has no sample value for it", name, str(get(ref, "name")))
			}
			env[name] = sample
			continue
		}
		key := str(get(ref, "key"))
		if v := get(sec, "stringData", key); v != nil {
			env[name] = str(v)
		} else if v := get(sec, "data", key); v != nil {
			b, err := base64.StdEncoding.DecodeString(str(v))
			if err != nil {
				t.Fatalf("Secret %s data %s: %v", str(get(sec, "metadata", "name")), key, err)
			}
			env[name] = string(b)
		} else {
			t.Errorf("env %s: Secret %s has no key %s", name, str(get(sec, "metadata", "name")), key)
		}
	}
	for _, secret := range []string{"HERALD_REDIS_URL", "HERALD_JWT_SECRET", "HERALD_API_KEY", "HERALD_ADMIN_KEY"} {
		for _, cm := range byKind["ConfigMap"] {
			if _, ok := get(cm, "data").(map[string]any)[secret]; ok {
				t.Errorf("%s is in ConfigMap %s: credentials belong in a Secret", secret, str(get(cm, "metadata", "name")))
			}
		}
	}
	// A mounted public key: the file the setting names is in a volume.
	if f := env["HERALD_JWT_PUBLIC_KEY_FILE"]; f != "" {
		mounted := false
		for _, m := range sliceOf(get(ctr, "volumeMounts")) {
			mounted = mounted || strings.HasPrefix(f, str(get(m, "mountPath"))+"/")
		}
		if !mounted {
			t.Errorf("HERALD_JWT_PUBLIC_KEY_FILE=%s is on no volume", f)
		}
		delete(env, "HERALD_JWT_PUBLIC_KEY_FILE") // the parser would read the file
	}
	if env["HERALD_REDIS_URL"] == "" {
		t.Error("no HERALD_REDIS_URL: the replicas would not share topics")
	}
	cfg := checkEnv(t, "the chart's Deployment", env, known)

	_, port, _ := net.SplitHostPort(cfg.Addr)
	ports := map[string]int{}
	for _, p := range sliceOf(get(ctr, "ports")) {
		ports[str(get(p, "name"))] = num(t, "containerPort", get(p, "containerPort"))
	}
	if strconv.Itoa(ports["http"]) != port {
		t.Errorf("containerPort http = %d, the server listens on %s", ports["http"], cfg.Addr)
	}

	for probe, want := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"} {
		p := get(ctr, probe)
		if p == nil {
			t.Errorf("no %s", probe)
			continue
		}
		path := str(get(p, "httpGet", "path"))
		if path != want {
			t.Errorf("%s path = %q, want %q (neither may depend on Redis)", probe, path, want)
		}
		if pp := str(get(p, "httpGet", "port")); pp != "http" && pp != port {
			t.Errorf("%s port = %q", probe, pp)
		}
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET %s on a running server answered %d", probe, path, resp.StatusCode)
		}
	}

	grace := num(t, "terminationGracePeriodSeconds", get(pod, "spec", "terminationGracePeriodSeconds"))
	preStop := num(t, "preStop.sleep.seconds", get(ctr, "lifecycle", "preStop", "sleep", "seconds"))
	if need := time.Duration(preStop)*time.Second + cfg.DrainTimeout; time.Duration(grace)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %d <= preStop %ds + drain timeout %v", grace, preStop, cfg.DrainTimeout)
	}
	if cfg.DrainDelay >= cfg.DrainTimeout {
		t.Errorf("drain delay %v >= drain timeout %v", cfg.DrainDelay, cfg.DrainTimeout)
	}

	// Memory: at least the measured ~11 KB per stream times
	// --max-connections, and a limit above the request.
	if cfg.MaxConnections <= 0 {
		t.Fatal("the chart sets no --max-connections: memory cannot be sized")
	}
	req := quantity(t, str(get(ctr, "resources", "requests", "memory")))
	limit := quantity(t, str(get(ctr, "resources", "limits", "memory")))
	if perConn := int64(11 << 10); req < int64(cfg.MaxConnections)*perConn {
		t.Errorf("memory request %d B < --max-connections %d x %d B", req, cfg.MaxConnections, perConn)
	}
	if limit <= req {
		t.Errorf("memory limit %d <= request %d", limit, req)
	}
	if get(ctr, "resources", "requests", "cpu") == nil {
		t.Error("no cpu request")
	}
	if get(pod, "spec", "securityContext", "runAsNonRoot") != true || get(ctr, "securityContext", "readOnlyRootFilesystem") != true ||
		get(ctr, "securityContext", "allowPrivilegeEscalation") != false {
		t.Error("not a non-root, read-only container without privilege escalation")
	}

	svc := one("Service")
	if !labelsMatch(get(svc, "spec", "selector"), podLabels) {
		t.Error("the Service does not select the pods")
	}
	svcPorts := map[string]bool{}
	for _, p := range sliceOf(get(svc, "spec", "ports")) {
		svcPorts[str(get(p, "name"))] = true
		if tp := str(get(p, "targetPort")); ports[tp] == 0 && tp != port {
			t.Errorf("Service targetPort %q is not a container port", tp)
		}
	}
	if pdb := named("PodDisruptionBudget", str(get(dep, "metadata", "name"))); pdb != nil {
		if !labelsMatch(get(pdb, "spec", "selector", "matchLabels"), podLabels) {
			t.Error("the PodDisruptionBudget does not select the pods")
		}
		if m := get(pdb, "spec", "maxUnavailable"); m == nil || num(t, "maxUnavailable", m) < 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %v: no voluntary disruption could proceed", m)
		}
	}
	if hpa != nil {
		if str(get(hpa, "spec", "scaleTargetRef", "kind")) != "Deployment" || str(get(hpa, "spec", "scaleTargetRef", "name")) != str(get(dep, "metadata", "name")) {
			t.Error("the HPA does not scale the Deployment")
		}
		if min := num(t, "minReplicas", get(hpa, "spec", "minReplicas")); min < 2 {
			t.Errorf("HPA minReplicas %d", min)
		}
		found := false
		for _, m := range sliceOf(get(hpa, "spec", "metrics")) {
			name := str(get(m, "pods", "metric", "name"))
			if name == "" {
				continue
			}
			found = true
			if !exported[name] {
				t.Errorf("the HPA scales on %s, which herald does not export", name)
			}
			target := quantity(t, str(get(m, "pods", "target", "averageValue")))
			if target <= 0 || target >= int64(cfg.MaxConnections) {
				t.Errorf("HPA target %d streams per pod: want below --max-connections %d", target, cfg.MaxConnections)
			}
		}
		if !found {
			t.Error("the HPA has no pods metric on connections")
		}
	}
	if sm := named("ServiceMonitor", str(get(svc, "metadata", "name"))); sm != nil {
		if !labelsMatch(get(sm, "spec", "selector", "matchLabels"), get(svc, "metadata", "labels")) {
			t.Error("the ServiceMonitor does not select the Service")
		}
		for _, e := range sliceOf(get(sm, "spec", "endpoints")) {
			if !svcPorts[str(get(e, "port"))] || str(get(e, "path")) != "/metrics" {
				t.Errorf("ServiceMonitor endpoint %v: want a Service port and /metrics", e)
			}
		}
	}
	if want["PrometheusRule"] {
		groups := sliceOf(get(one("PrometheusRule"), "spec", "groups"))
		rules := loadRules(t)
		if len(groups) != len(rules.Groups) || len(groups) == 0 {
			t.Errorf("PrometheusRule has %d groups, %s %d", len(groups), rulesFile, len(rules.Groups))
		}
	}
}

func sliceOf(v any) []any {
	l, _ := v.([]any)
	return l
}

// quantity reads a Kubernetes quantity without fractions: 246Mi, 1Gi, 500M, 30000.
func quantity(t *testing.T, q string) int64 {
	t.Helper()
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"", 1}} {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("quantity %q: %v", q, err)
			}
			return v * u.mult
		}
	}
	return 0
}
