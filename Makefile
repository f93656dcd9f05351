# herald's build and test entry points. `make test` is the test command the
# README and CI (.ci/run) use.

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# An execution count, not a duration: a duration -fuzztime can fail with a bare
# "context deadline exceeded" at its end (golang/go#75804, fixed in Go 1.27).
FUZZTIME    ?= 100000x
BIN         ?= bin/herald
# Helm builds from the module proxy once (about 5 minutes on two cores) into
# bin/tools; later runs use that binary and reach no registry at all.
HELM_VERSION ?= v4.3.2
TOOLS       ?= $(CURDIR)/bin/tools
HELM        ?= $(TOOLS)/helm-$(HELM_VERSION)
HELM_CHART  := deployments/helm/herald
# Helm's own homes under bin/tools: no repositories or plugins from the
# user's, and the chart has no dependencies, so nothing is fetched.
HELM_ENV    := HELM_CACHE_HOME=$(TOOLS)/helm-home/cache HELM_CONFIG_HOME=$(TOOLS)/helm-home/config HELM_DATA_HOME=$(TOOLS)/helm-home/data

# The testcontainers reaper image cannot be pulled without a registry; tests
# clean up their own containers (and CI removes leftovers by label).
export TESTCONTAINERS_RYUK_DISABLED := true

.PHONY: test fmt-check vet staticcheck unit full-scale faults soak test-deps helm fuzz run build clean image images bench

## test: format check, vet, staticcheck, then every test with the race detector.
test: fmt-check vet staticcheck test-deps helm unit full-scale faults

## fmt-check: fail listing the files gofmt would change.
fmt-check:
	@files="$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*'))"; \
	if [ -n "$$files" ]; then echo "gofmt would change these files (run gofmt -w):"; echo "$$files"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

unit: export HERALD_HELM = $(HELM)
unit:
	$(GO) test -race -count=1 ./...

## full-scale: the load-shaped tests again without the race detector, at the
## sizes the race detector cannot hold (5,000 reconnecting clients).
full-scale:
	$(GO) test -count=1 -run 'TestReconnectStorm|TestSlowConsumer' ./internal/server/

## faults: the fault-injection suite (internal/faults): FAULT_SCHEDULES seeded
## schedules of network and Redis faults against three brokers, without the
## race detector (a two-schedule smoke run of it is part of `unit`). About
## 2.5 minutes on two cores.
FAULT_SCHEDULES ?= 20
FAULT_LANES     ?= 2
# testcontainers' own log lines (they start with the date) are left out; the
# test's exit status is kept.
FILTER_TC = rc=$$(mktemp); { $(1); echo $$? >$$rc; } 2>&1 | grep -v '^20[0-9][0-9]/'; s=$$(cat $$rc); rm -f $$rc; exit $$s
faults:
	@$(call FILTER_TC,HERALD_FAULT_SCHEDULES=$(FAULT_SCHEDULES) HERALD_FAULT_LANES=$(FAULT_LANES) \
		$(GO) test -count=1 -timeout 10m -run '^TestFaults$$' -v ./internal/faults/)

## soak: the fault-injection suite for SOAK_DURATION (default 1h), cycling
## through a fixed list of seeds; prints a summary at the end.
SOAK_DURATION ?= 1h
SOAK_SEEDS    ?= 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
SOAK_BUDGET   ?= 20s
soak:
	@$(call FILTER_TC,HERALD_FAULT_DURATION=$(SOAK_DURATION) HERALD_FAULT_SEEDS=$(SOAK_SEEDS) \
		HERALD_FAULT_BUDGET=$(SOAK_BUDGET) HERALD_FAULT_LANES=$(FAULT_LANES) \
		$(GO) test -count=1 -timeout 0 -run '^TestFaults$$' -v ./internal/faults/)

## test-deps: prepare what the tests need beyond Go: the Redis image (built
## locally, no registry). Under CI=true a failure here fails the build;
## elsewhere, without Docker, the Redis tests skip with a message.
test-deps:
	@if [ "$${CI:-}" = "true" ]; then sh scripts/e2e-prepare.sh; \
	elif docker info >/dev/null 2>&1; then sh scripts/e2e-prepare.sh || echo "test-deps: could not prepare the images or Chromium; the tests that need them will skip"; \
	else echo "test-deps: Docker is not reachable; Redis and end-to-end tests will skip"; fi

## helm: helm lint and helm template of the chart, with its defaults and with
## every option on (ci/options-values.yaml). The Go test
## (internal/e2e, TestHelm) then checks the rendered manifests against the
## server's configuration parser. Without the module proxy and no binary
## yet, the chart tests skip locally and fail under CI=true.
helm:
	@if [ ! -x "$(HELM)" ]; then \
		echo "helm: building helm $(HELM_VERSION) into $(TOOLS) (once)"; \
		mkdir -p "$(TOOLS)/build" && GOBIN="$(TOOLS)/build" $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) && mv "$(TOOLS)/build/helm" "$(HELM)" || \
		{ if [ "$${CI:-}" = "true" ]; then exit 1; fi; echo "helm: could not build helm; the chart tests will skip"; exit 0; }; \
	fi; \
	set -e; for values in "" "-f $(HELM_CHART)/ci/options-values.yaml"; do \
		$(HELM_ENV) "$(HELM)" lint --strict --quiet $(HELM_CHART) $$values; \
		$(HELM_ENV) "$(HELM)" template herald $(HELM_CHART) $$values >/dev/null 2>"$(TOOLS)/helm-template.log" || { cat "$(TOOLS)/helm-template.log"; exit 1; }; \
	done; echo "helm: chart lints and renders (defaults, ci/options-values.yaml)"

## fuzz: run every fuzz target for FUZZTIME executions each (a short run for CI).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz: $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## run: start the server on :8080 with the in-process broker.
run:
	$(GO) run ./cmd/server

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/server

## bench: scenarios S1-S8 against refserver, herald (memory), herald (Redis) and herald (Redis Cluster of 3 primaries); QUICK=1 for a smoke run
bench:
	bash scripts/bench.sh

## image: herald's container image (static binary FROM scratch), no registry
image:
	sh scripts/images.sh herald

## images: every local image compose and the e2e tests use
images:
	sh scripts/images.sh

clean:
	rm -rf bin
