# Airlock — everything a fresh Debian 12 machine needs, as root.
#   make demo   run a real task end to end (installs what is missing)
#   make test   run every test tier (installs what is missing)
#   make stop   stop what `make demo` started
SHELL := /bin/bash
export PATH := $(CURDIR)/bin:/usr/local/go/bin:$(PATH)
export GOFLAGS ?= -mod=mod
export AIRLOCK_TEMPORAL_BIN := $(CURDIR)/bin/temporal

# Packages whose tests boot real VMs run one at a time (at most 2 guests
# work at once under TCG); everything else runs 2 packages in parallel.
VM_PKGS := ./activities/sandbox/... ./testsuite/...
UNIT_PKGS = $(shell go list ./... | grep -v -e /activities/sandbox -e /testsuite)

.PHONY: all build deps temporal image host pg dev demo stop status test unit vmtest bench replay-record image-smoke clean-data

all: build

deps:            ## apt packages (idempotent)
	deploy/dev/install-deps.sh

temporal: bin/temporal
bin/temporal:
	deploy/dev/install-temporal.sh

build: deps
	@mkdir -p bin
	CGO_ENABLED=1 go build -o bin/airlock ./cmd/airlock

image: deps      ## golden image, cached outside the repo by input hash
	deploy/images/build.sh

image-smoke: image host
	deploy/images/smoke-test.sh

host: deps       ## libvirtd, networks, firewall, storage pool
	deploy/host/setup.sh

pg: deps         ## private PostgreSQL under .data/pg
	deploy/dev/postgres.sh start

dev: build temporal image host   ## the whole local stack, left running
	deploy/dev/stack.sh start

demo: dev        ## a real task end to end; AUTO_APPROVE=1 approves as demo-approver
	deploy/dev/demo.sh

stop:            ## stop what `make dev`/`make demo` started (by recorded PID)
	deploy/dev/stack.sh stop

status:
	deploy/dev/stack.sh status

test: build temporal image host pg unit vmtest   ## all tiers

unit:
	AIRLOCK_TEST_PG_URL="$$(deploy/dev/postgres.sh url)" go test -p 2 -count=1 -timeout 20m $(UNIT_PKGS)

# flock: one VM-booting test run per machine at a time (TCG fits ~2 working guests).
vmtest:
	AIRLOCK_TEST_PG_URL="$$(deploy/dev/postgres.sh url)" flock /tmp/airlock-vm.lock go test -p 1 -count=1 -timeout 60m $(VM_PKGS)

# -p 1: the VM benchmarks and remote's local-sshd ones must not share the 2
# cores; the VM lock keeps other VM-booting runs out of the figures too.
bench: build temporal image host pg   ## figures and same-run ratios; never asserted
	AIRLOCK_TEST_PG_URL="$$(deploy/dev/postgres.sh url)" flock /tmp/airlock-vm.lock go test -p 1 -run '^$$' -bench . -benchtime 5x -timeout 60m ./bench/... ./activities/remote/

replay-record: build temporal image host pg   ## refresh workflows/testdata from a real end-to-end run
	AIRLOCK_RECORD_HISTORY=$(CURDIR)/workflows/testdata AIRLOCK_TEST_PG_URL="$$(deploy/dev/postgres.sh url)" go test -count=1 -timeout 45m -run TestEndToEnd ./testsuite/

clean-data: stop
	rm -rf .data
