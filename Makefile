# dicomgw — see README.md. Quick start: `make run`, `make test`.

GO       ?= go
VERSION  ?= 0.1.0-dev
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 60s
# What `make test` gives each fuzz target (CI too): a count of executions
# (1-10 s each here), not a duration. With a duration, go1.26's fuzz
# coordinator sometimes reports "context deadline exceeded" as a failure
# when the time runs out (golang/go#75804, fixed in go1.27); a count has no
# deadline to race. A real finding still fails, with its input written to
# testdata/fuzz. (`make fuzz` keeps a duration: rerun it on that message.)
FUZZTIME_SHORT ?= 5000x
# Fuzz targets as package:Target.
FUZZ_TARGETS := \
	./pkg/pdu:FuzzReadPDU \
	./pkg/pdu:FuzzReadPDUSplit \
	./pkg/pdu:FuzzAssociateItems \
	./pkg/dimse:FuzzDecodeCommand \
	./pkg/dimse:FuzzAssociation \
	./pkg/dcmhead:FuzzWalk \
	./pkg/part10:FuzzReadGroup \
	./pkg/forward:FuzzSTOWAnswer \
	./pkg/forward:FuzzMatcher \
	./pkg/route:FuzzRoute \
	./pkg/stgcmt:FuzzDecodeRequest
# Targets whose coverage depends on goroutine scheduling (a live
# association): minimizing their inputs would chase coverage that does not
# reproduce, so it is off for them.
FUZZ_NO_MINIMIZE := FuzzAssociation

.PHONY: all build run test test-deps unit conformance deploy-test statement docker bench fuzz fuzz-short vet clean

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

# Every test: unit tests (with the race detector), the interoperability
# tests against real peers in conformance/ (the conformance statement's
# tables included), and the deployment files in deploy/ (helm, promtool,
# systemd-analyze; the tools must be there, not skipped).
test: test-deps vet
	$(GO) test -count=1 -race -timeout 15m ./pkg/... ./cmd/... ./internal/...
	$(GO) test -count=1 -timeout 20m ./conformance/...
	$(MAKE) deploy-test
	$(MAKE) fuzz-short

unit:
	$(GO) test -count=1 ./pkg/... ./cmd/... ./internal/...

conformance: test-deps
	$(GO) test -count=1 -v -timeout 20m ./conformance/...

vet:
	$(GO) vet ./...

# The Dockerfile, Helm chart, systemd unit, alert rules and dashboard.
deploy-test: test-deps
	DICOMGW_DEPLOY_TOOLS=required $(GO) test -count=1 -timeout 10m ./deploy/...

# Rewrites the generated tables of conformance/statement.md (SOP classes,
# transfer syntaxes, defaults) from pkg/uid and pkg/dimse.
statement:
	$(GO) run ./conformance/gen

# The container image, stamped like `make build` (needs a Docker engine).
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t dicomgw:$(VERSION) .

# Benchmark against dcmtk's storescp in the same run (not a test).
bench: test-deps
	$(GO) run ./bench

# Each fuzz target for FUZZTIME (default 60s): make fuzz FUZZTIME=10m
fuzz:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_FOR=$(FUZZTIME)

# Each fuzz target for a few seconds: part of `make test`.
fuzz-short:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_FOR=$(FUZZTIME_SHORT) FUZZ_MIN=0

fuzz-run:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t#*:}; min="$(FUZZ_MIN)"; \
		case " $(FUZZ_NO_MINIMIZE) " in *" $$name "*) min=0;; esac; \
		echo "== $$name ($$pkg) for $(FUZZ_FOR)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_FOR) $${min:+-fuzzminimizetime=$$min} $$pkg; \
	done

clean:
	rm -rf bin var
