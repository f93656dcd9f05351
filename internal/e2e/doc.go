// Package e2e holds herald's end-to-end tests: the deployment files
// (Kubernetes manifests, compose file, load balancer configs) checked
// against the server's real configuration, and failover scenarios on real
// containers — Redis, three herald replicas from the locally built image and
// a load balancer (HAProxy or nginx) on one Docker network, with clients
// (Go, and a headless Chromium through chromedp) connected only through the
// balancer.
//
// The container tests need images that exist locally (scripts/images.sh
// builds them without a registry) and, for the browser test, Chromium.
// Without Docker, an image or Chromium they skip with a message naming what
// is missing; with CI=true they fail instead. Set HERALD_E2E=0 to skip
// them. TESTCONTAINERS_RYUK_DISABLED=true is set when unset (the reaper
// image cannot be pulled); the tests remove their containers and networks
// themselves.
package e2e
