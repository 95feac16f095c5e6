# ingot — see README.md. `make help` lists the targets.
SHELL      := /bin/bash
ARCH       ?= $(shell go env GOARCH)
PROFILE    ?= dev
BOOT       ?= direct
NET        ?= restricted
CACHE      ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ingot
SYSROOT_ARM64 := $(CACHE)/sysroot/arm64
GOFLAGS_NODE := -trimpath -buildvcs=false -tags 'seccomp netgo osusergo'
LDFLAGS_NODE := -s -w -linkmode external -extldflags '-static'
NODE_SRC   := $(shell find cmd init profiles runtime netsetup -name '*.go' -o -name '*.toml') go.mod go.sum
HOST_SRC   := $(shell find cmd image profiles qemu internal -name '*.go' -o -name '*.toml') go.mod go.sum

.PHONY: iso help deps build image qemu test unit vet bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

deps: ## install missing host packages (idempotent; quick when nothing is missing)
	@./scripts/deps.sh

build: bin/ingot bin/ingot-node-amd64 bin/ingot-node-arm64 ## build the host CLI and the node binary for both arches

bin/ingot: $(HOST_SRC)
	CGO_ENABLED=0 go build -trimpath -o $@ ./cmd/ingot

bin/ingot-node-amd64: $(NODE_SRC)
	CGO_ENABLED=1 GOARCH=amd64 CC=gcc go build $(GOFLAGS_NODE) -ldflags "$(LDFLAGS_NODE)" -o $@ ./cmd/ingot-node

# arm64 libseccomp comes from Debian's arm64 packages unpacked into a sysroot in the cache: no dpkg
# architecture is added to the host.
$(SYSROOT_ARM64)/.done: | bin/ingot
	bin/ingot fetch --arch arm64 --into $(SYSROOT_ARM64) libseccomp-dev libseccomp2
	touch $@

bin/ingot-node-arm64: $(NODE_SRC) $(SYSROOT_ARM64)/.done
	CGO_ENABLED=1 GOARCH=arm64 CC=aarch64-linux-gnu-gcc \
	CGO_CFLAGS="-I$(SYSROOT_ARM64)/usr/include" \
	CGO_LDFLAGS="-L$(SYSROOT_ARM64)/usr/lib/aarch64-linux-gnu" \
	go build $(GOFLAGS_NODE) -ldflags "$(LDFLAGS_NODE)" -o $@ ./cmd/ingot-node

image: deps bin/ingot bin/ingot-node-$(ARCH) ## build out/$(PROFILE)-$(ARCH) (PROFILE=dev ARCH=amd64|arm64); builds the node binary for ARCH only
	bin/ingot build --profile $(PROFILE) --arch $(ARCH) --out out/$(PROFILE)-$(ARCH)

iso: deps bin/ingot bin/ingot-node-$(ARCH) ## build out/$(PROFILE)-$(ARCH) with ingot.iso and disk.qcow2 (PROFILE=metal by default here; INSTALL_DISK=/dev/… makes the ISO install onto that disk)
	bin/ingot build --profile $(if $(filter command line,$(origin PROFILE)),$(PROFILE),metal) --arch $(ARCH) \
		--out out/$(if $(filter command line,$(origin PROFILE)),$(PROFILE),metal)-$(ARCH) --iso $(if $(INSTALL_DISK),--install-disk $(INSTALL_DISK))

qemu: image ## build the dev image for ARCH and boot it with the serial console here (BOOT=direct|uefi, NET=restricted|user)
	bin/ingot qemu --image out/$(PROFILE)-$(ARCH) --boot $(BOOT) --net $(NET) --console

unit: ## unit tests only (no root, no VM)
	go test -short ./...

vet: ## gofmt, go vet, go.mod/go.sum as `go mod tidy` would leave them, and the docs' links
	@test -z "$$(gofmt -l cmd init image profiles qemu internal runtime netsetup cluster)" || { gofmt -l cmd init image profiles qemu internal runtime netsetup cluster; exit 1; }
	@go mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run go mod tidy (go mod tidy -diff shows what changes)"; exit 1; }
	@./scripts/checklinks.sh
	go vet ./...

test: deps build vet ## the whole suite: unit, root and VM tiers (CI=true makes every skip a failure), then fuzzing CRI-to-OCI (100000 inputs) and config.toml (50000)
	INGOT_BIN=$(CURDIR)/bin go test -count=1 -timeout 55m -p 1 ./...
	@# Counts, not durations: Go 1.26's fuzz coordinator can report a bare "context deadline
	@# exceeded" when a -fuzztime duration ends with a worker mid-call (go.dev/issue/75804).
	go test -run '^$$' -fuzz FuzzContainerSpec -fuzztime 100000x ./runtime/oci
	go test -run '^$$' -fuzz FuzzParse -fuzztime 50000x ./runtime/config

.PHONY: critest critest-vm
critest: bin/ingot-node-$(ARCH) ## CRI conformance: critest vs the runtime here, in private namespaces; a failing spec fails the target (root; ~2 min; CRITEST_ARGS=-ginkgo.focus=…)
	go run ./internal/critest/cmd/critest -strict -node $(CURDIR)/bin/ingot-node-$(ARCH) -cache $(CACHE) $(if $(CRITEST_ARGS),-- $(CRITEST_ARGS))

critest-vm: deps bin/ingot-node-amd64 bin/ingot-node-arm64 ## critest inside the dev VM vs the node's runtime: all specs on x86_64 (8-15 min), a smoke subset on arm64 (~5 min); a failing spec fails the target (CRITEST_FOCUS=…)
	INGOT_BIN=$(CURDIR)/bin INGOT_CRITEST_VM=full INGOT_CRITEST_FOCUS='$(CRITEST_FOCUS)' go test -count=1 -v -timeout 150m -run '^TestCritestInVM$$' ./qemu/vmtest

BENCH_RUN := $(shell date -u +%Y%m%dT%H%M%SZ)
bench: deps build ## benchmarks: ingot beside containerd v2.4 + runc v1.5 (pod start, teardown, pull, idle and per-pod PSS; a table of ratios), pod start and per-pod PSS alone (host); boot to node ready, first and warm, beside the floor per arch and path; UKI vs kernel size; writes out/bench/RUN.json
	mkdir -p out/bench
	set -o pipefail; INGOT_BIN=$(CURDIR)/bin go test -run '^$$' -bench 'PodStart|RunPodSandbox|Compare' -benchtime 50x -timeout 30m ./runtime/integration | tee out/bench/$(BENCH_RUN)-host.txt
	set -o pipefail; INGOT_BIN=$(CURDIR)/bin go test -run '^$$' -bench 'Boot|ImageSize' -benchtime 5x -timeout 60m ./qemu/vmtest | tee out/bench/$(BENCH_RUN)-vm.txt
	go run ./internal/benchjson/cmd/benchjson -o out/bench/$(BENCH_RUN).json -commit "$$(git rev-parse --short HEAD 2>/dev/null)" out/bench/$(BENCH_RUN)-host.txt out/bench/$(BENCH_RUN)-vm.txt

.PHONY: bench-compare
bench-compare: ## compare two bench runs: make bench-compare OLD=out/bench/A.json NEW=out/bench/B.json (fails when a metric is >10% worse)
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make bench-compare OLD=out/bench/A.json NEW=out/bench/B.json" >&2; exit 2; }
	go run ./internal/benchjson/cmd/benchjson compare $(OLD) $(NEW)

.PHONY: e2e-upgrade
e2e-upgrade: deps bin/ingot-node-$(ARCH) ## image swap on an ARCH node booted by UEFI: ingot ctl upgrade to a healthy image (committed, /var kept), to one whose runtime fails (rolled back by itself), rollback by hand; power cut at 7 points of swaps; a cluster worker's swap gated on node Ready, and one whose kubelet never reports rolled back (make test runs it on amd64)
	INGOT_BIN=$(CURDIR)/bin INGOT_CLUSTER_TEST=1 INGOT_E2E_ARCH=$(ARCH) go test -count=1 -v -timeout 90m -run '^(TestUpgradeInVM|TestUpgradePowerCutInVM|TestUpgradeClusterNodeInVM)$$' ./qemu/vmtest

.PHONY: e2e-state
e2e-state: deps bin/ingot-node-$(ARCH) ## the state partition on an ARCH node: first boots (256 MiB, 6.3 GiB) clean to e2fsck after ext4lazyinit, /var grown to 20 GiB with a file kept, power cuts during the first format and under load, a damaged /var left untouched (make test runs the first part on both arches, the cuts on amd64)
	INGOT_BIN=$(CURDIR)/bin INGOT_E2E_ARCH=$(ARCH) go test -count=1 -v -timeout 60m -run '^(TestStateFilesystemInVM|TestStatePowerCutInVM|TestStatePowerCutUnderLoadInVM|TestStateDamagedInVM)$$/^$(ARCH)$$' ./qemu/vmtest

.PHONY: cluster cluster-down e2e-cluster
WORKERS ?= 1
cluster: deps bin/ingot bin/ingot-node-$(ARCH) ## a Kubernetes control plane on 127.0.0.1 and WORKERS (default 1) worker VMs of ARCH that join it (ingot cluster up --workers; builds etcd, kube-apiserver/-controller-manager and the kubelet into the cache the first time, ~30 min on 2 cores)
	bin/ingot build --profile worker --arch $(ARCH) --out out/worker-$(ARCH)
	bin/ingot cluster up --workers $(WORKERS) --arch $(ARCH) --image out/worker-$(ARCH)

e2e-cluster: deps bin/ingot-node-$(ARCH) ## a cluster of one ARCH worker (ingot cluster up --workers 1, restricted network, test registry) checked with kubectl: node info, probes, logs/exec/port-forward, kube-proxy and a ClusterIP Service, reboot, cleanup after deletion; and the join failure lines (~15 min under TCG; make test runs it on amd64)
	INGOT_BIN=$(CURDIR)/bin INGOT_CLUSTER_TEST=1 INGOT_E2E_ARCH=$(ARCH) go test -count=1 -v -timeout 60m -run '^(TestClusterE2E|TestKubeletJoinFailuresInVM)$$' ./qemu/vmtest

cluster-down: bin/ingot ## stop the control plane of make cluster and remove its state (ingot cluster down)
	bin/ingot cluster down

clean: ## remove bin/ and out/ (the download cache stays)
	rm -rf bin out
