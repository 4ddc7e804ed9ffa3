#!/usr/bin/env bash
# Installs everything streamtrain needs on a fresh Debian machine, idempotently:
# system packages (Chromium for the UI tests, iproute2 + util-linux for the cluster tests,
# buildah + debootstrap for the image build, PostgreSQL), a project venv with the Python packages
# (Airflow, MPICH + mpi4py from PyPI, pyarrow, numpy, Cython, test tools) and the compiled table.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# the multi-host harness (scripts/netns_hosts.py, tests/cluster): ip netns and unshare --uts
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)  # tests slow a syscall of a real save
# the image build and its test (docker/build.sh, tests/docker): no registry, a debootstrap base
command -v buildah >/dev/null 2>&1 || need_apt+=(buildah)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
# the production metadata database (`make demo DB=postgres`, the scheduler tests on both DBs)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      echo "setup: cannot install ${need_apt[*]} (not root, no sudo); browser tests will fail" >&2
      need_apt=()
    fi
  fi
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    if [[ " ${need_apt[*]} " == *" postgresql "* && ! -e /etc/postgresql-common/createcluster.conf ]]; then
      # the project starts its own private cluster (plugins/streamtrain_airflow/postgres.py):
      # no system-wide "main" cluster on port 5432
      $SUDO mkdir -p /etc/postgresql-common
      echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip setuptools wheel "cython>=3.0,<4" "numpy>=1.26"
echo "setup: pip install -e .[dev] (Airflow, MPICH, mpi4py, pyarrow, ...)"
"$VENV/bin/pip" install -q --no-build-isolation -e ".[dev]"
"$VENV/bin/python" -c "import pstable, trainer, streamtrain_airflow; from mpi4py import MPI" \
  || { echo "setup: the installed packages do not import" >&2; exit 1; }
echo "setup: done ($VENV)"
