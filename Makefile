# NxMesh build and test entry points. `make test` is what CI runs (.ci/run).

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Race detection on every package; the suite stays well inside CI's budget.
TESTFLAGS ?= -race -count=1 -timeout 15m
# Each fuzz target runs this many inputs inside make test. A count, not a
# duration: when a duration ends while a worker is minimizing a new input,
# go test reports "context deadline exceeded" as a fuzz failure.
FUZZTIME  ?= 20000x
STATICCHECK_VERSION ?= v0.8.2

# Where make demo keeps the hub, relay and agent state between runs.
DEMO_DIR  ?= .demo

.PHONY: all build demo bench test test-deps test-unit fuzz lint clean

all: build

## build: compile bin/nxmesh
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/nxmesh ./cmd/nxmesh

## demo: a hub, a relay and an agent with a real nginx on this machine, serving a sample site (Ctrl-C stops)
demo: build
	./scripts/test-deps.sh nginx
	./bin/nxmesh demo --data-dir $(DEMO_DIR)

## bench: the reference load run (10,000 simulated agents, 2 relays, 1 hub on SQLite; connect, 10 pushes, a storm): prints the table, writes .bench/standard.json and .bench/standard.html
bench: build
	./bin/nxmesh bench standard --json .bench/standard.json --html .bench/standard.html

## test-deps: install what the tests talk to (nginx, PostgreSQL server binaries)
test-deps:
	./scripts/test-deps.sh

## test: the whole suite with -race, then every fuzz target for $(FUZZTIME)
test: test-deps
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) ./...
	./scripts/fuzz.sh $(FUZZTIME)

## fuzz: run every fuzz target for FUZZTIME (make fuzz FUZZTIME=5m, or a count like 100000x)
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

## lint: gofmt, go vet, and staticcheck from the module proxy
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean:
	rm -rf bin $(DEMO_DIR) .bench
