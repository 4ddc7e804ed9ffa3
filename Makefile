# The two README commands: `make demo` (set up + run the main job), `make test` (set up + tests).
VENV := .venv
STAMP := $(VENV)/.setup-done
SOURCES := setup.cfg setup.py pyproject.toml $(wildcard pstable/*.pyx pstable/*.pxd pstable/*.pxi pstable/*.h)

.PHONY: setup demo ui ui-stop test test-fast test-mpi test-airflow test-docker image bench clean

# the UI's Airflow home (`make ui AIRFLOW_HOME_DIR=...` for another one)
AIRFLOW_HOME_DIR ?= var/airflow

$(STAMP): $(SOURCES) scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

# the metadata database of `make demo`: sqlite (embedded default) or postgres (private, var/)
DB ?= sqlite

demo: $(STAMP)
	$(VENV)/bin/streamtrain demo --db $(DB)

# keep the UI up (api-server, scheduler, dag-processor on 127.0.0.1, each in its own process group)
ui: $(STAMP)
	$(VENV)/bin/python -m streamtrain_airflow.airflow_home ui --home $(AIRFLOW_HOME_DIR)

ui-stop:
	$(VENV)/bin/python -m streamtrain_airflow.airflow_home ui-stop --home $(AIRFLOW_HOME_DIR)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# no real mpiexec, Airflow or browser; FAST_WORKERS processes (pytest-xdist), one per core here
FAST_WORKERS ?= 2
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" -n $(FAST_WORKERS)

# real mpiexec jobs without Airflow
test-mpi: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m mpi

# real Airflow processes (scheduler, api-server, dag-processor)
test-airflow: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m airflow_e2e

# build the image of docker/ from scratch with buildah and run the project in it (root)
test-docker: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m docker

# the image of docker/ (buildah, a debootstrap base, no registry; docs/docker.md)
image: $(STAMP)
	bash docker/build.sh

bench: $(STAMP)
	$(VENV)/bin/python bench/pstable_bench.py --quick
	$(VENV)/bin/python bench/store_bench.py --quick
	$(VENV)/bin/python bench/train_bench.py --quick
	$(VENV)/bin/python bench/rowgroup_bench.py --quick
	$(VENV)/bin/python bench/ui_bench.py --quick

clean:
	rm -rf var build *.egg-info pstable/*.so pstable/*.c
