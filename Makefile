# dicomgw — see README.md. Quick start: `make run`, `make test`.

GO       ?= go
VERSION  ?= 0.1.0-dev
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 60s
# Fuzz targets as package:Target.
FUZZ_TARGETS := \
	./pkg/pdu:FuzzReadPDU \
	./pkg/pdu:FuzzReadPDUSplit \
	./pkg/dimse:FuzzDecodeCommand \
	./pkg/dcmhead:FuzzWalk

.PHONY: all build run test test-deps unit conformance bench fuzz vet clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/dicomgw ./cmd/dicomgw

# Runs the gateway with the example flags file: DICOM on :11112 (AE title
# DICOMGW), spool in ./var/spool, objects filed into ./var/archive.
run: build
	./bin/dicomgw serve --flagfile deploy/dicomgw.flags

# Installs the test peers (dcmtk, ...) when missing.
test-deps:
	./scripts/install-test-deps.sh

# Every test: unit tests (with the race detector) and the interoperability
# tests against real peers in conformance/.
test: test-deps vet
	$(GO) test -count=1 -race -timeout 15m ./pkg/... ./cmd/... ./internal/...
	$(GO) test -count=1 -timeout 20m ./conformance/...

unit:
	$(GO) test -count=1 ./pkg/... ./cmd/... ./internal/...

conformance: test-deps
	$(GO) test -count=1 -v -timeout 20m ./conformance/...

vet:
	$(GO) vet ./...

# Benchmark against dcmtk's storescp in the same run (not a test).
bench: test-deps
	$(GO) run ./bench

# Each fuzz target for FUZZTIME (default 60s): make fuzz FUZZTIME=10m
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

clean:
	rm -rf bin var
