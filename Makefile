# Quick start: `make demo` then `make test`. Both install what is missing when run as root.
SHELL := /bin/bash
SWIFT ?= swift
PACKAGES := libnetfilter-conntrack-dev libmnl-dev libpcap-dev libssl-dev pkg-config conntrack conntrackd nftables tcpdump iproute2 iputils-ping netcat-openbsd python3-scapy

.PHONY: all build release deps test demo bench fuzz clean

all: build

deps:
	@missing=$$(for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing packages (run as root or install them): $$missing" >&2; exit 1; fi; \
	fi

build: deps
	$(SWIFT) build

# Release builds carry the Swift runtime and Foundation inside: a command starts in about
# half the CPU time (no 30 shared libraries to load and relocate), which scripts calling
# `ctsync conntrack` or the replication control commands notice.
release: deps
	$(SWIFT) build -c release --static-swift-stdlib

# Unit tests need no root; integration tests run as root in their own network
# namespaces and fail (not skip) when CI is set and they cannot run.
test: build
	@set -o pipefail; $(SWIFT) test --disable-swift-testing 2>&1 | tee .build/test.log; status=$$?; \
	line=$$(grep -E 'Executed [0-9]+ tests?, with [0-9]+ failures?' .build/test.log | tail -1); \
	if [ -n "$$line" ]; then \
	  set -- $$(echo "$$line" | sed -E 's/.*Executed ([0-9]+) tests?, with ([0-9]+) failures?.*/\1 \2/'); \
	  echo "$$(( $$1 - $$2 )) passed, $$2 failed"; \
	fi; exit $$status

demo: build
	@bash contrib/demo.sh .build/debug/ctsync

bench: release
	@bash contrib/bench/run.sh
	@bash contrib/bench/decode.sh

fuzz:
	@bash contrib/fuzz/run.sh

clean:
	rm -rf .build
