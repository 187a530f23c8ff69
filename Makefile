# `make example`: set up and materialize example_project end to end.
# `make test`:    set up, install the Debian packages the suite needs, `make check`, then the
#                 whole test suite (what .ci/run runs).
# `make check`:   ruff (lint + format) and strict mypy; fast, and the first thing `make test` does.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export FURTHER_ROOT ?= $(CURDIR)/.further

# Debian 12 packages of the test tiers: the Slurm tier (the ones scripts/slurm-cluster installs),
# the browser tier (/usr/bin/chromium; chromedriver for WebDriver-based checks), and PostgreSQL
# 15's server binaries for the postgres tier (installed when $FURTHER_PG_BIN/initdb is missing).
SLURM_PACKAGES := slurm-wlm munge slurmdbd mariadb-server-core mariadb-client-core
BROWSER_PACKAGES := chromium chromium-driver
PG_PACKAGES := postgresql-15
LINT_PATHS := further_dagster tests example_project bench

.PHONY: setup system-deps check example test bench bench-slurm dev clean

setup: $(VENV)/.installed

# Re-runs whenever pyproject.toml changes (dependencies, extras); the stamp is touched last, so a
# failed install is retried by the next make.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# Idempotent: one dpkg-query per package when everything is there. Installs only as root;
# otherwise prints the apt-get command and fails. `apt-get update` runs only if an install fails.
# While installing, a temporary policy-rc.d (if the machine has none) keeps the packages' init
# scripts from starting PostgreSQL, munge or Slurm daemons: the tests start their own.
define SYSTEM_DEPS_SH
set -euo pipefail
say() { printf 'system-deps: %s\n' "$$*"; }
pg_bin=$${FURTHER_PG_BIN:-/usr/lib/postgresql/15/bin}
missing_packages() {
    local p
    for p in $(SLURM_PACKAGES) $(BROWSER_PACKAGES); do
        [[ $$(dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null) == "install ok installed" ]] ||
            printf '%s\n' "$$p"
    done
    [[ -x $$pg_bin/initdb ]] || printf '%s\n' $(PG_PACKAGES)
}
mapfile -t missing < <(missing_packages)
(($${#missing[@]})) || exit 0
if [[ $$(id -u) != 0 ]]; then
    say "ERROR: missing Debian packages: $${missing[*]}" >&2
    say "install them as root: apt-get install -y --no-install-recommends $${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d own_policy=
log=$$(mktemp /tmp/further-system-deps.XXXXXX)
trap '[[ -z $$own_policy ]] || rm -f "$$policy"' EXIT
if [[ ! -e $$policy ]]; then
    printf '#!/bin/sh\n# temporary, from make system-deps: start no service while installing\nexit 101\n' >"$$policy"
    chmod 0755 "$$policy"
    own_policy=1
fi
apt=(apt-get -o DPkg::Lock::Timeout=600)
say "installing $${missing[*]}"
if ! "$${apt[@]}" install -y --no-install-recommends "$${missing[@]}" >"$$log" 2>&1; then
    say "apt-get install failed; running apt-get update and retrying"
    "$${apt[@]}" update >>"$$log" 2>&1 || true
    if ! "$${apt[@]}" install -y --no-install-recommends "$${missing[@]}" >>"$$log" 2>&1; then
        tail -n 30 "$$log" >&2
        say "ERROR: apt-get install failed (log: $$log)" >&2
        exit 1
    fi
fi
mapfile -t still < <(missing_packages)
if (($${#still[@]})); then
    say "ERROR: still missing after apt-get install: $${still[*]} (no $$pg_bin/initdb?) (log: $$log)" >&2
    exit 1
fi
rm -f "$$log"
say "installed $${missing[*]} in $${SECONDS}s"
endef
export SYSTEM_DEPS_SH

system-deps:
	@bash -c "$$SYSTEM_DEPS_SH"

# Runs every check and fails if any failed.
check: setup
	@rc=0; \
	for cmd in "ruff check $(LINT_PATHS)" "ruff format --check $(LINT_PATHS)" "mypy"; do \
	  echo "$(BIN)/$$cmd"; $(BIN)/$$cmd || rc=1; \
	done; \
	exit $$rc

example: setup
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp deploy/dagster.example.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster asset materialize -m example_project --select '*' \
	  --partition-range "$$($(BIN)/further-dagster partition-range -m example_project)"

# check first (fast), then the packages, then pytest; stops at the first that fails.
test: setup
	$(MAKE) --no-print-directory check
	$(MAKE) --no-print-directory system-deps
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/bench_overhead.py

# 100-point sweep on the local Slurm (started and stopped by the script if not running)
bench-slurm: setup
	$(BIN)/python bench/bench_slurm.py

# `make dev HOST=0.0.0.0 PORT=3001` to reach the UI from another machine or port.
HOST ?= 127.0.0.1
PORT ?= 3000
dev: setup
	mkdir -p "$(DAGSTER_HOME)"
	test -f "$(DAGSTER_HOME)/dagster.yaml" || cp deploy/dagster.example.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

clean:
	rm -rf .further .dagster_home .slurm .pytest_cache .mypy_cache .ruff_cache
