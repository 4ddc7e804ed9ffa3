"""What a UI page costs on a long chain: the reads behind one model page, against reading every
version of the chain.

A model page shows the newest ``DEFAULT_PER_PAGE`` versions and a chart of the last
``DEFAULT_HOURS`` data hours. Printed, each the median of ``--repeats`` runs over a synthetic
store of ``--versions`` versions (``tests/ui/ui_storegen.py``):

- page cold: the ledger replayed, then the ``meta.json`` of the page's rows and of the chart's
  window read and checked against their sha256 (caches empty, as after the UI started);
- page warm: the same again (the ledger unchanged since: its cached replay and metas serve it);
- page 40: a cold page far back in the chain (the last page if there are fewer; reads do not
  grow with depth);
- baseline, whole chain: every version's ``meta.json`` read and checked, what a page that
  joined the whole chain would cost.

    .venv/bin/python bench/ui_bench.py                        # 3,000 versions, 5 repeats
    .venv/bin/python bench/ui_bench.py --versions 20000
    .venv/bin/python bench/ui_bench.py --quick                # 300 versions, 1 repeat
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from streamtrain_airflow.ui import data
from streamtrain_airflow.ui.app import DEFAULT_HOURS, DEFAULT_PER_PAGE

from tests.ui.ui_storegen import make_store


def page_reads(model_dir: str, page: int) -> None:
    """The data-layer calls of a model page (``ui/app.py``): its table rows and its chart."""
    chain = data.read_chain(model_dir)
    versions, _ = data.page_of(chain, page, DEFAULT_PER_PAGE)
    for v in versions:
        data.version_row(model_dir, v)
    data.series(chain, DEFAULT_HOURS)


def whole_chain(model_dir: str) -> None:
    chain = data.read_chain(model_dir)
    for v in chain.versions:
        data.version_row(model_dir, v)


def timed(fn, *, cold: bool) -> float:
    if cold:
        data.clear_caches()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="300 versions, 1 repeat")
    ap.add_argument("--root", help="folder of the synthetic store (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.quick:
        args.versions, args.repeats = 300, 1
    with tempfile.TemporaryDirectory(dir=args.root) as root:
        model_dir = str(Path(root) / "big")
        make_store(Path(model_dir), "big", args.versions, missing=(100,))
        cases = {"page cold": (lambda: page_reads(model_dir, 1), True),
                 "page warm": (lambda: page_reads(model_dir, 1), False),
                 "page 40 cold": (lambda: page_reads(model_dir, 40), True),
                 "baseline, whole chain cold": (lambda: whole_chain(model_dir), True)}
        times = {label: [] for label in cases}
        for _ in range(args.repeats):  # turn by turn, so drift hits every case alike
            for label, (fn, cold) in cases.items():
                times[label].append(timed(fn, cold=cold))
    baseline = statistics.median(times["baseline, whole chain cold"])
    print(f"ui_bench: {args.versions} versions, median of {args.repeats}; "
          f"page = {DEFAULT_PER_PAGE} rows + a {DEFAULT_HOURS}-hour chart")
    print("| case | ms | / whole chain |\n| --- | ---: | ---: |")
    for label, samples in times.items():
        t = statistics.median(samples)
        print(f"| {label} | {t * 1e3:.1f} | {t / baseline:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
