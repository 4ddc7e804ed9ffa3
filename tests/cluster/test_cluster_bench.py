"""``bench/cluster_bench.py`` runs end to end on a small size and prints its table (its numbers
are not asserted: they belong to an idle machine, see docs/benchmarks.md)."""
import re
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_cluster_bench_prints_every_row(tmp_path):
    done = subprocess.run([sys.executable, "bench/cluster_bench.py", "--rows", "6000",
                           "--repeats", "1", "--root", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    number = r"\s+[\d,]+(\.\d+)?"
    for row in ("1 server \\+ 1 worker, one host", "2 servers \\+ 2 workers, 4 namespaced hosts",
                "local disk", "S3 server \\(moto, loopback\\)"):
        assert re.search(f"^{row}{number}", done.stdout, flags=re.M), done.stdout
    spread = next(ln for ln in done.stdout.splitlines() if ln.startswith("2 servers"))
    assert int(spread.split()[-2].replace(",", "")) > 1000  # bytes per example crossed the bridge
