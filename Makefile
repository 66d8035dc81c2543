# Airlock — everything a fresh Debian 12 machine needs, as root.
#   make demo   run a real task end to end (installs what is missing)
#   make test   run every test tier (installs what is missing)
SHELL := /bin/bash
export PATH := $(CURDIR)/bin:/usr/local/go/bin:$(PATH)
export GOFLAGS ?= -mod=mod
DATA := $(CURDIR)/.data

.PHONY: all build deps temporal image host pg dev demo stop test unit bench replay-record clean

all: build

deps:            ## apt packages (idempotent)
	deploy/dev/install-deps.sh

temporal: bin/temporal
bin/temporal:
	deploy/dev/install-temporal.sh

build: deps
	mkdir -p bin && CGO_ENABLED=1 go build -o bin/airlock ./cmd/airlock

image: deps      ## golden image, cached outside the repo by input hash
	deploy/images/build.sh

host: deps       ## libvirtd, networks, firewall, storage pool
	deploy/host/setup.sh

pg: deps         ## private PostgreSQL under .data/pg
	deploy/dev/postgres.sh start
