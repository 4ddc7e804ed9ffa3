# The two README commands: `make demo` (set up + run the main job), `make test` (set up + tests).
VENV := .venv
STAMP := $(VENV)/.setup-done
SOURCES := setup.cfg setup.py pyproject.toml $(wildcard pstable/*.pyx pstable/*.pxd pstable/*.pxi pstable/*.h)

.PHONY: setup demo test test-fast bench clean

$(STAMP): $(SOURCES) scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/streamtrain demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/python bench/pstable_bench.py --quick
	$(VENV)/bin/python bench/store_bench.py --quick
	$(VENV)/bin/python bench/train_bench.py --quick

clean:
	rm -rf var build *.egg-info pstable/*.so pstable/*.c
