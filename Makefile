# tsbatch: `make demo` and `make test` work on a fresh Debian/Ubuntu machine (see README.md).
#
#   make setup   redis-server, victoria-metrics, iproute2 and nftables (apt-get, only if missing; ip and
#                nft build the network partition of tests/test_partition.py), nodejs and npm (the Flux
#                parser of tests/test_flux.py, which runs `npm ci` in tests/flux), prometheus (and its
#                promtool: tests/test_metrics.py scrapes workers and checks deploy/prometheus/alerts.yml;
#                under systemd the package also enables a prometheus service on :9090, unused by the tests),
#                .venv with the project
#   make demo    1,000,000 points through the whole pipeline and read back (DEMO_ARGS=--keep to keep it)
#   make test    the test suite, on its own redis-server and VictoriaMetrics instances
#   make bench   docs/BENCHMARKS.md's measurements (scripts/bench.py; BENCH_ARGS=--quick for a smoke run,
#                BENCH_ARGS=--windows-only for the window part alone, --archive-only for the archive part)
#   make chaos   docs/RELIABILITY.md's fault scenarios (scripts/chaos.py; CHAOS_ARGS=--quick, --scenario NAME)
#   make lint    ruff check, ruff format --check, mypy
#   make clean   remove var/ (demo data, stacks and logs)

PYTHON ?= python3
VENV := .venv
DEMO_ARGS ?=
BENCH_ARGS ?=
CHAOS_ARGS ?=
# apt-get needs root: use sudo only when we are not root already.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages demo test bench chaos lint clean

setup: system-packages $(VENV)/.installed

# Installed only when a binary is missing, so that re-runs neither ask for sudo nor touch apt.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v tmux >/dev/null 2>&1 || missing="$$missing tmux"; \
	command -v victoria-metrics >/dev/null 2>&1 || command -v victoria-metrics-prod >/dev/null 2>&1 \
		|| missing="$$missing victoria-metrics"; \
	PATH="$$PATH:/usr/sbin:/sbin"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing with apt-get"; \
		$(SUDO) apt-get update && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "tsbatch needs Python >= 3.11; '$(PYTHON)' is: $$($(PYTHON) --version 2>&1)." >&2; \
		echo "Install a newer python3, or run: make PYTHON=/path/to/python3.11 ..." >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "creating $(VENV) failed: on Debian/Ubuntu run: apt-get install python3-venv" >&2; exit 1; }

# The stamp is newer than pyproject.toml once its dependencies are installed: re-runs take no time.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/python scripts/demo.py $(DEMO_ARGS)

test: setup
	.venv/bin/pytest -q

bench: setup
	$(VENV)/bin/python -m pip install -q -e '.[bench]'
	$(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

chaos: setup
	$(VENV)/bin/python scripts/chaos.py $(CHAOS_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict scripts

clean:
	rm -rf var/
