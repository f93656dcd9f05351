package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// composeCommand returns the Compose the machine has: `docker compose`
// (v2) or `docker-compose` (v1).
func composeCommand(t *testing.T) []string {
	t.Helper()
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	unavailable(t, "neither `docker compose` nor `docker-compose` is installed")
	return nil
}

// TestCompose runs deployments/compose.yaml as a user would (both load
// balancers), publishes through each balancer and receives through the
// other, and stops a replica gracefully.
func TestCompose(t *testing.T) {
	needDocker(t, heraldImage, redisImage, haproxyImage, nginxImage, promImage)
	project := fmt.Sprintf("heralde2e%d", os.Getpid())
	hapPort, statsPort, ngxPort, promPort := freePort(t), freePort(t), freePort(t), freePort(t)
	p := newCompose(t, project, []string{
		"HERALD_PORT=" + strconv.Itoa(hapPort),
		"HERALD_STATS_PORT=" + strconv.Itoa(statsPort),
		"HERALD_NGINX_PORT=" + strconv.Itoa(ngxPort),
		"HERALD_PROMETHEUS_PORT=" + strconv.Itoa(promPort),
	}, "-f", deployDir+"/compose.yaml", "--profile", "nginx", "--profile", "monitoring")
	run := p.run
	start := time.Now()
	if out, err := run(2*time.Minute, "up", "-d", "--no-build"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	hap := fmt.Sprintf("http://127.0.0.1:%d", hapPort)
	ngx := fmt.Sprintf("http://127.0.0.1:%d", ngxPort)
	c := &cluster{t: t, LB: hap, lbStats: fmt.Sprintf("http://127.0.0.1:%d/", statsPort), lbKind: haproxy}
	c.waitLB(3, 60*time.Second)
	poll(t, 30*time.Second, "nginx to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		code, _, err := httpGet(ctx, ngx+"/readyz")
		return err == nil && code == 200
	})
	t.Logf("compose (%s) up in %v", strings.Join(p.cmd, " "), time.Since(start).Round(time.Millisecond))
	prom := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	// Prometheus scrapes the three replicas.
	poll(t, 60*time.Second, "Prometheus scraping herald1..3", func() bool {
		var res struct {
			Data struct {
				ActiveTargets []struct {
					Health string `json:"health"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if !promGet(prom+"/api/v1/targets", &res) {
			return false
		}
		up := 0
		for _, tg := range res.Data.ActiveTargets {
			if tg.Health == "up" {
				up++
			}
		}
		return up == 3
	})

	// The demo page through the balancer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	code, body, err := httpGet(ctx, hap+"/")
	cancel()
	if err != nil || code != 200 || !strings.Contains(body, "herald demo") {
		t.Fatalf("GET / through HAProxy: %d %v", code, err)
	}

	// Subscribe through one balancer, publish through the other (the
	// replicas opt in to publishers that are not on loopback).
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	viaHAP := subscribe(sctx, hap, []string{"compose"})
	viaNGX := subscribe(sctx, ngx, []string{"compose"})
	poll(t, 20*time.Second, "both subscribers connected", func() bool { return viaHAP.opens.Load() > 0 && viaNGX.opens.Load() > 0 })
	publish := func(base string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			form := url.Values{"topic": {"compose"}, "data": {fmt.Sprintf("compose|%s|%d", base, i)}}
			resp, err := http.PostForm(base+"/publish", form)
			if err != nil {
				t.Fatalf("publish through %s: %v", base, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("publish through %s: %s", base, resp.Status)
			}
		}
	}
	publish(ngx, 10)
	publish(hap, 10)
	// A graceful stop of one replica (docker's SIGTERM, the drain) while
	// streams are open.
	if out, err := run(time.Minute, "stop", "-t", "25", "herald1"); err != nil {
		t.Fatalf("compose stop herald1: %v\n%s", err, out)
	}
	publish(hap, 10)
	poll(t, 30*time.Second, "30 events on both subscribers", func() bool { return viaHAP.n.Load() >= 30 && viaNGX.n.Load() >= 30 })
	stopAll(t, scancel, []*subscriber{viaHAP, viaNGX})
	for _, s := range []*subscriber{viaHAP, viaNGX} {
		events, resets := s.received()
		if len(events) != 30 || len(resets) != 0 {
			t.Fatalf("got %d events and resets %v, want 30 and none", len(events), resets)
		}
		for i, ev := range events {
			want := fmt.Sprintf("compose|%s|%d", []string{ngx, hap, hap}[i/10], i%10)
			if ev.Data != want {
				t.Fatalf("event %d is %q, want %q", i, ev.Data, want)
			}
		}
	}
	checkBrokerDownAlert(t, run, prom, project)
}

// promGet GETs a Prometheus API URL into v; false on any failure.
func promGet(u string, v any) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, u)
	return err == nil && code == 200 && json.Unmarshal([]byte(body), v) == nil
}

// checkBrokerDownAlert cuts herald2 off from Redis (its network to Redis
// only: Prometheus still scrapes it) and waits for the HeraldBrokerDown
// alert of deployments/prometheus/herald-rules.yml to fire for it (the
// rule waits 1m).
func checkBrokerDownAlert(t *testing.T, run func(time.Duration, ...string) (string, error), prom, project string) {
	t.Helper()
	id, err := run(30*time.Second, "ps", "-q", "herald2")
	if err != nil || strings.TrimSpace(id) == "" {
		t.Fatalf("compose ps herald2: %v %q", err, id)
	}
	cmd := exec.Command("docker", "network", "disconnect", project+"_back", strings.TrimSpace(id))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker network disconnect: %v\n%s", err, out)
	}
	cut := time.Now()
	var state string
	poll(t, 4*time.Minute, "HeraldBrokerDown firing for herald2", func() bool {
		var res struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		if !promGet(prom+"/api/v1/alerts", &res) {
			return false
		}
		for _, a := range res.Data.Alerts {
			if a.Labels["alertname"] == "HeraldBrokerDown" {
				if a.Labels["instance"] != "herald2:8080" {
					t.Fatalf("HeraldBrokerDown for %q, want herald2:8080 only", a.Labels["instance"])
				}
				state = a.State
			}
		}
		return state == "firing"
	})
	t.Logf("HeraldBrokerDown firing for herald2 %v after it lost Redis", time.Since(cut).Round(time.Second))
}
