# pycni — every target installs what it needs first (a fresh Debian 12 machine is enough).
PYTHON      := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: deps engine test unit lint demo bench clean

deps:
	bash scripts/deps.sh

engine: deps
	bash scripts/engine.sh

# All tiers: unit (fakes), integration (real plugins in netns), e2e (real dockerd + docker CLI).
# pytest's exit 5 means nothing was collected: a failure, never a pass.
test: engine
	$(PYTHON) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests collected" >&2; exit 1; fi; exit $$rc

unit: deps
	$(PYTHON) -m pytest -m unit $(PYTEST_ARGS)

lint: deps
	.venv/bin/ruff check shim tests
	.venv/bin/mypy shim

demo: engine
	bash scripts/demo.sh

bench: engine
	$(PYTHON) -m tests.bench

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
