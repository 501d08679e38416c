# pycni — every target installs what it needs first (a fresh Debian 12 machine, as root, is enough).
#
#   make test                          every tier: unit, integration (root), e2e (root + dockerd)
#   make test PYTEST_ARGS='-k foo -x'  extra pytest arguments
#   make unit                          the unit tier only (no root, no engine)
#   make test-compat                   the e2e tier against Docker 20.10 (Debian 12's engine)
#   make test-cni19                    the integration and e2e tiers against CNI plugins 1.9.1
#   make test-engine28                 the e2e tier against Docker 28.5 (Debian sid's engine)
PYTHON      := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: deps engine test test-compat test-cni19 test-engine28 unit soak lint demo demo-multihost bench clean plugin plugin-rm \
        test-plugin

deps:
	bash scripts/deps.sh

engine: deps
	bash scripts/engine.sh

# All tiers (the markers unit/integration/e2e are declared in pyproject.toml).
# pytest's exit 5 means nothing was collected: a failure, never a pass.
test: engine
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The e2e tier against Debian 12's Docker 20.10, unpacked from the bookworm packages next to 26.1;
# scripts/compat.sh swaps the engines under the e2e lock and always puts 26.1 back.
test-compat: deps
	bash scripts/compat.sh $(PYTEST_ARGS)

# The e2e tier against Debian sid's Docker 28.5 (containerd 2.1, the system's runc), swapped in
# the same way.
test-engine28: deps
	PYCNI_COMPAT_ENGINE=28.5 bash scripts/compat.sh $(PYTEST_ARGS)

# The integration and e2e tiers again, against the CNI reference plugins 1.9.1 from Debian sid
# (unpacked by scripts/sid.sh into a directory of their own, given through CNI_PATH); chains of
# reference plugins are written at cniVersion 1.1.0 (STATUS before ADD, 1.1.0 results). The dhcp
# lease test (minutes) runs on each engine with the 1.1.1 plugins, not again here; the tests
# marked once (the overlay's stop test) run in make test only.
CNI19_DIR := /opt/pycni-sid/cni
test-cni19: engine
	bash scripts/sid.sh $(CNI19_DIR) containernetworking-plugins
	PYCNI_TEST_CNI_BIN=$(CNI19_DIR)/usr/lib/cni $(PYTHON) -m pytest \
	    -m "(integration or e2e) and not lease and not once" \
	    $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-cni19: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The long forms of the load, fault and fuzz tests (issue-sized counts; minutes, not seconds),
# and of the overlay's stop test (one host's pycni stopped 10 minutes, pings counted).
soak: engine
	PYCNI_LOAD_CONTAINERS=100 PYCNI_LOAD_CLIENTS=10 PYCNI_CHURN_CYCLES=500 \
	PYCNI_FUZZ_EXAMPLES=2500 PYCNI_STOP_SECONDS=600 $(PYTHON) -m pytest -s tests/e2e/test_load.py \
	tests/e2e/test_faults.py $(wildcard tests/unit/test_api_fuzz.py) \
	"tests/e2e/test_multihost.py::test_a_stopped_pycni_keeps_its_host_routed_and_no_ping_is_lost" \
	$(PYTEST_ARGS)

unit: deps
	$(PYTHON) -m pytest -m unit $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make unit: pytest collected no tests" >&2; exit 1; fi; exit $$rc

# pycni as a managed Docker plugin (plugin.json + Dockerfile), built offline and enabled as
# pycni:latest; plugin-rm disables and removes it (the cached base image stays).
plugin: engine
	bash scripts/plugin.sh build

plugin-rm:
	bash scripts/plugin.sh remove

# The e2e tier against the managed plugin (PYCNI_E2E_PLUGIN=1): build and enable it, run the
# tests, remove it — holding the machine-wide e2e lock throughout (the tests don't wait on it).
test-plugin: engine
	PYCNI_E2E_LOCK_HELD=1 flock /run/lock/pycni-e2e.lock bash scripts/plugin.sh test $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check shim tests
	.venv/bin/mypy shim tests

demo: engine
	bash scripts/demo.sh

# Two Docker hosts on this machine, one pycni overlay network across them, a ping; then nothing left.
demo-multihost: engine
	bash scripts/multihost.sh demo

# Speed and memory as ratios against Docker's bridge and the raw CNI chain (never a test).
#   make bench BENCH_ARGS='--only P3,P4 --containers 20 --clients 4 --endpoints 100'
#   flags: --only P1,P2,P3,P4,P5  --runs N  --containers N  --clients N  --rounds N
#          --endpoints N  --quick  --keep-log   (python -m tests.bench --help)
BENCH_ARGS ?=
bench: engine
	$(PYTHON) -m tests.bench $(BENCH_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info build
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
