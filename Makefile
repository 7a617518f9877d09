# bootstrap — see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := build

CONFIG  ?= platform.hcl
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
export GOFLAGS := -buildvcs=false
export GOTOOLCHAIN := local

STATICCHECK_VERSION := v0.8.2

.PHONY: build tools test-tools up down env plan status test test-unit test-integration bench lint clean screenshots lab-up lab-down

build: ## build bin/bootstrap (and bin/lab, the machine lab)
	@mkdir -p bin
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/bootstrap ./cmd/bootstrap
	$(GO) build -trimpath -o bin/lab ./tools/lab

tools: ## install the pinned vault, consul, nomad, ... into ./bin (cached; seconds when warm)
	@tools/install.sh
	@$(GO) run ./tools/images -bin bin -out bin/images

up: tools build ## bring up the platform of $(CONFIG) (default: local, on this machine)
	bin/bootstrap up -c $(CONFIG) --auto-approve

down: build ## stop and remove the platform of $(CONFIG)
	bin/bootstrap down -c $(CONFIG) --auto-approve

env: build ## export lines for the official CLIs: eval "$$(make -s env)"
	@bin/bootstrap env -c $(CONFIG) --token admin

plan: build
	bin/bootstrap plan -c $(CONFIG)

status: build
	bin/bootstrap status -c $(CONFIG)

# Integration and end-to-end tests need the real binaries; BOOTSTRAP_REQUIRE_TOOLS
# turns a missing binary into a failure instead of a skip.
# The whole output also goes to artifacts/test.log; a failed run ends with
# what failed (.ci/failures). Two packages run at once (-p 2), in the
# order given: the two long journeys first (stages/platform's platforms one
# after another, 27 min; the lab's, 25 min), the short packages after them
# in whichever lane frees first. In ./...'s order the local journeys
# started behind ten minutes of short packages on a cold machine (their
# test binaries compiled), and ended last. More at once (the labs' journeys
# beside two local platforms) overloaded the two cores: a first up took 20
# min instead of 2.
# TESTFLAGS=-v keeps every test's notes in artifacts/test.log: each
# journey's subtests and bootstrap runs with their durations.
TESTPKGS := ./stages/platform ./internal/lab/labe2e ./...
test: tools test-tools build ## all tests: unit, integration against real servers, end to end
	@mkdir -p artifacts
	set -o pipefail; BOOTSTRAP_REQUIRE_TOOLS=1 $(GO) test -count=1 -timeout 85m -p 2 $(TESTFLAGS) $(TESTPKGS) 2>&1 | tee artifacts/test.log \
		|| { .ci/failures artifacts/test.log; exit 1; }

# What only the tests need: the releases before the pinned Consul and Nomad
# (the rolling upgrade starts from them).
test-tools:
	@tools/install.sh previous

test-unit: ## unit tests only (no servers)
	$(GO) test -short -count=1 ./...

# The floor against `bootstrap up` (tools/floor/bench: up, the floor, the
# ratio, per stage, converged up, down, 1 vs 3 clients), then the Go
# benchmarks; both into bench.txt.
bench: tools build ## benchmarks; results in bench.txt
	set -o pipefail; $(GO) run ./tools/floor/bench -bin bin -bootstrap bin/bootstrap | tee bench.txt
	set -o pipefail; BOOTSTRAP_REQUIRE_TOOLS=1 $(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 30m ./... | tee -a bench.txt

# A tour of the running platform's web UIs in headless Chromium (make tools
# installs it), signed in as a user: a PNG per page in $(SCREENSHOTS).
SCREENSHOTS ?= screenshots
screenshots: build ## PNGs of every web UI of the running platform, in $(SCREENSHOTS)/
	$(GO) run ./tools/screenshots -c $(CONFIG) -o $(SCREENSHOTS) -bootstrap bin/bootstrap

# The machine lab (internal/lab): $(LAB_SERVERS) servers + $(LAB_CLIENTS) clients as
# systemd-nspawn machines on a bridge (10.213.0.0/24), as root. lab-up writes
# $(LAB_DIR)/inventory.json and $(LAB_DIR)/lab.hcl for bin/bootstrap up -c $(LAB_DIR)/lab.hcl.
LAB_DIR     ?= .lab
LAB_SERVERS ?= 3
LAB_CLIENTS ?= 2
LAB_VOLUMES ?=
# LAB_PUBLIC=true gives the clients public addresses (10.214.0.0/24) and an
# outside network namespace, lab-lab-out, to reach them from.
LAB_PUBLIC  ?= false
lab-up: tools build ## boot the machine lab (root; systemd-nspawn)
	bin/lab up -dir $(LAB_DIR) -servers $(LAB_SERVERS) -clients $(LAB_CLIENTS) -bin $(CURDIR)/bin -data-volumes "$(LAB_VOLUMES)" -public=$(LAB_PUBLIC)

lab-down: build ## remove the machine lab: machines, mounts, links, cgroups
	bin/lab down -dir $(LAB_DIR)

lint: ## gofmt, go vet, staticcheck, ansible-lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: run gofmt -w"; exit 1; }
	$(GO) vet ./...
	@test -x bin/staticcheck || GOBIN=$(CURDIR)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	bin/staticcheck ./...
	@if command -v ansible-lint >/dev/null; then cd ansible && ansible-lint; else echo "ansible-lint not installed (apt-get install ansible-lint)"; fi

clean:
	rm -rf bin/bootstrap bench.txt
