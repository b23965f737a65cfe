# vspc-bridge — the two commands a fresh machine needs are `make run` and `make test`.
GO       ?= go
BIN      := bin/vspc-bridge
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# make fuzz: how long each target runs (a duration, or Nx for N inputs).
FUZZTIME ?= 5s
# make test's smoke run counts inputs instead of seconds: a deadline makes
# the result depend on how busy the machine is (go test reports a
# baseline that did not finish in time as "context deadline exceeded"),
# a count does not. 30,000 inputs take 0.5-6 s per target on 2 idle cores
# (FuzzFrontDoor, the slowest, about 30 s).
SMOKEFUZZ ?= 30000x
# How long go test may minimise a new input (Go's default is 60s).
FUZZMINTIME ?= 60s
# Every fuzz target, as package:Target.
FUZZ_TARGETS := \
	./telnet:FuzzDecode \
	./telnet:FuzzDecodeN \
	./telnet:FuzzOptionsState \
	./rfc2217:FuzzRFC2217 \
	./rfc2217:FuzzAccessServer \
	./rfc2217:FuzzClient \
	./rfc2217:FuzzParseSettings \
	./vspc:FuzzExt232 \
	./vspc:FuzzServerConn \
	./vspc:FuzzHandoff \
	./configs:FuzzParse \
	./configs:FuzzParseAllow \
	./configs:FuzzParseOrigin \
	./internal/vcuuid:FuzzNormalizeUUID \
	./configs:FuzzScanKeyLines \
	./alerts:FuzzLineAssembly \
	./devices/target:FuzzParse \
	./aspp:FuzzReplyDecoder \
	./aspp:FuzzRequestDecoder \
	./remote:FuzzEscaper \
	./remote:FuzzFrontDoor \
	./remote:FuzzLoginAndServiceURI \
	./remote:FuzzConsoleStream \
	./web:FuzzUnauthenticated

.PHONY: all build run test test-unit fuzz-smoke fuzz bench bench-ab lint peers clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/vspc-bridge

# Starts the bridge on the embedded default config (configs/example.toml):
# VMs on 127.0.0.1:13370, loopback targets only. Ctrl-C stops it.
# make run CONFIG=FILE starts it on FILE instead.
CONFIG ?=
run: build
	./$(BIN) serve $(if $(CONFIG),-config $(CONFIG))

# Installs the real test peers (socat, ser2net, pyserial, sredird, telnet)
# from Debian when missing, then runs every test with the race detector and
# each fuzz target briefly.
test: peers lint test-unit fuzz-smoke

peers:
	bash scripts/install-test-peers.sh

test-unit:
	$(GO) test -race -count=1 -timeout 12m ./...

# The smoke run starts from the committed seeds only (a corpus grown by
# long runs in the Go build cache would make it longer and different on
# every machine), runs a fixed number of inputs per target (SMOKEFUZZ) and
# does not minimise. Its corpus cache is a directory of its own, removed
# afterwards: 'go clean -fuzzcache' would delete the cache under a second
# make test running beside this one. A crasher is still written to
# testdata/fuzz.
fuzz-smoke:
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && \
		$(MAKE) --no-print-directory fuzz FUZZTIME=$(SMOKEFUZZ) FUZZMINTIME=0 FUZZCACHE="$$dir"

# make fuzz FUZZTIME=10m runs each target for that long. FUZZCACHE, when
# set, is the corpus cache to use instead of the one in Go's build cache.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		if grep -qs "func $$name(" $$pkg/*_test.go; then \
			echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $$pkg \
				$(if $(FUZZCACHE),-args -test.fuzzcachedir="$(FUZZCACHE)/$$name"); \
		else echo "fuzz: $$pkg $$name not present" >&2; exit 1; fi; \
	done

# Codec benchmarks, the in-process vspc benchmarks, the heavy fault tests
# (with 9,000 VM connections going idle at once: TestFaultKeepaliveStorm),
# then the load tool (cmd/vspc-load: the bridge as a separate process,
# loopback only; about 6 minutes on 2 cores) with the issue's targets,
# then its direction-server phases (remote consoles: RSS per console with
# 1,000 and 5,000 consoles, 50 consoles x 256 KiB each way against
# direction client, a stalled client; about 4 minutes).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./telnet ./aspp
	$(GO) test -run '^$$' -bench 'OpenToFirstByte' -benchtime 200x ./devices
	$(GO) test -run '^$$' -bench 'IdlePorts' -benchtime 2000x ./vspc
	$(GO) test -run '^$$' -bench 'ThroughputOneSession|VMotionSwitchover|RoundTrip' -benchtime 2s ./vspc
	$(GO) test -run '^$$' -bench 'HandshakeBurst' -benchtime 5x ./vspc
	$(GO) test -run '^$$' -bench 'ConsoleThroughput' -benchtime 2s ./remote
	VSPC_HEAVY=1 $(GO) test -count=1 -timeout 5m -run 'TestFault' ./vspc
	VSPC_HEAVY=1 $(GO) test -count=1 -timeout 25m -v -run 'TestClusterFault|TestClusterHeadline|TestFaultKeepaliveStorm' ./cmd/vspc-bridge
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/vspc-bridge
	$(GO) build -o bin/vspc-load ./cmd/vspc-load
	./bin/vspc-load -bridge-bin $(BIN) -idle 18000 -burst 1000 -remote 9000 -lat 1000 -vmotion-rate 1000
	./bin/vspc-load -bridge-bin $(BIN) -phases console,cstream,cstall -consoles 1000
	./bin/vspc-load -bridge-bin $(BIN) -phases console -consoles 5000 -rss-wait 130s

# The load run on this build and on the build at BASE (default: the
# commit before HEAD), side by side: every bridge phase runs on both,
# in 2 rounds with the order swapped, and a second table gives each key
# figure for both builds and their ratio. About 25 minutes on 2 cores
# (the run's -timeout grows with the rounds).
BASE ?= HEAD~1
bench-ab:
	rm -rf bin/base-src && mkdir -p bin/base-src
	git archive $(BASE) | tar -x -C bin/base-src
	cd bin/base-src && $(GO) build -o ../vspc-bridge-base ./cmd/vspc-bridge
	rm -rf bin/base-src
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/vspc-bridge
	$(GO) build -o bin/vspc-load ./cmd/vspc-load
	./bin/vspc-load -bridge-bin $(BIN) -baseline-bin bin/vspc-bridge-base -ab-rounds 2 -idle 18000 -burst 1000 -remote 9000 -lat 1000 -vmotion-rate 1000

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
