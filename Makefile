# Cortex: the two commands a new user needs are `make run` and `make test`.
# Both set everything up themselves on a fresh machine with Python 3.11.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 4000
# The browser tests (tests/browser) drive Debian's Chromium; Playwright's own download is not used.
CHROMIUM ?= /usr/bin/chromium
# The shared rate-limit tests start a private redis-server (tests/redis_server.py).
REDIS_SERVER ?= /usr/bin/redis-server
# The scale-out tests put a private nginx in front of two gateways (tests/nginx_server.py).
NGINX ?= /usr/sbin/nginx

.PHONY: run test lint bench venv dev-venv chromium redis-server nginx clean

run: $(VENV)/.runtime
	PORT=$(PORT) exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: lint $(CHROMIUM) $(REDIS_SERVER) $(NGINX)
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app providers wsgi.py

# The benchmark harness (bench/README.md): Cortex against the direct path, every scenario (~5 min).
# One scenario or a few: make bench SCENARIOS=s1,a; anything else: BENCH_ARGS='--edges off'.
SCENARIOS ?= s1,a,b,c1000,c10k
BENCH_ARGS ?=
bench: $(VENV)/.runtime
	$(BIN)/python bench/bench.py --scenarios $(SCENARIOS) $(BENCH_ARGS)

chromium: $(CHROMIUM)

# Installed only when missing, with apt-get (through sudo unless we are root).
$(CHROMIUM):
	@echo "make: $(CHROMIUM) is missing; installing Debian's chromium for the browser tests"
	@command -v apt-get >/dev/null || { echo "make: apt-get not found: install Chromium at $(CHROMIUM) (or set CHROMIUM=...)"; exit 1; }
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium

redis-server: $(REDIS_SERVER)

# Installed only when missing, like Chromium; the tests start their own, never the system service.
$(REDIS_SERVER):
	@echo "make: $(REDIS_SERVER) is missing; installing Debian's redis-server for the rate-limit tests"
	@command -v apt-get >/dev/null || { echo "make: apt-get not found: install redis-server at $(REDIS_SERVER) (or set REDIS_SERVER=...)"; exit 1; }
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y redis-server

nginx: $(NGINX)

# Installed only when missing, like Chromium; the tests start their own, never the system service.
$(NGINX):
	@echo "make: $(NGINX) is missing; installing Debian's nginx for the scale-out tests"
	@command -v apt-get >/dev/null || { echo "make: apt-get not found: install nginx at $(NGINX) (or set NGINX=...)"; exit 1; }
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y nginx

venv: $(VENV)/.runtime
dev-venv: $(VENV)/.dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
