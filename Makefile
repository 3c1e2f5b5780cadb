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
redis-server: $(REDIS_SERVER)
nginx: $(NGINX)

# System packages the tests need, installed only when missing, with apt-get (through sudo unless
# we are root). The tests start their own servers on loopback ports, never the system services.
# $(call apt_install,<Debian package>,<what needs it>)
define apt_install
	@echo "make: $@ is missing; installing Debian's $(1) for $(2)"
	@command -v apt-get >/dev/null || { echo "make: apt-get not found: install $(1) at $@ (or point the variable at it)"; exit 1; }
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $(1)
endef

$(CHROMIUM):
	$(call apt_install,chromium,the browser tests)

$(REDIS_SERVER):
	$(call apt_install,redis-server,the shared rate-limit and scale-out tests)

$(NGINX):
	$(call apt_install,nginx,the scale-out tests)

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
