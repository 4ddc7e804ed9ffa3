"""One module of an older git revision, loaded beside this tree's (for the A/B benchmarks)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_at(rev: str, path: str, name: str):
    """The file `path` of git revision `rev`, imported as the module `name`."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"],
                            check=True, capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    (folder / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
