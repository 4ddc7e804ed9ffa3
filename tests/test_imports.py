"""Import rules. No module uses another module's private names (``_name``): what one module needs
from another is public, named without the underscore, so its owner knows it is used. And
``trainer/`` never imports Airflow."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("trainer", "pstable", "plugins", "dags", "tests", "bench", "scripts")


def _sources() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def _own_modules(sources) -> set[str]:
    """Top-level names our code imports itself by: packages and the modules found on sys.path
    by their file name (test helpers, bench and script modules)."""
    return {"trainer", "pstable", "streamtrain_airflow", "tests"} | {p.stem for p in sources}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(path: Path, own: set[str], root: Path = REPO) -> list[str]:
    """``from X import _y`` and ``X._y`` in ``path`` where ``X`` is one of our modules."""
    tree = ast.parse(path.read_text(), filename=str(path))
    ours_bound: set[str] = set()  # local names bound to our modules (or to names in them)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] in own
            if not ours:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: from "
                                 f"{'.' * node.level}{node.module or ''} import {alias.name}")
                ours_bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in own:
                    ours_bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _is_private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in ours_bound):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    sources = _sources()
    own = _own_modules(sources)
    found = [use for path in sources for use in private_uses(path, own)]
    assert not found, "private names used from another module:\n" + "\n".join(found)


def test_the_check_sees_both_spellings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from trainer.gendata import _hidden, shown\nfrom . import _x\n"
                      "import trainer.store as st\nimport os\nst._remove(os._exit, shown._y)\n")
    uses = [u.split(": ", 1)[1] for u in private_uses(sample, {"trainer"}, tmp_path)]
    assert uses == ["from trainer.gendata import _hidden", "from . import _x", "st._remove",
                    "shown._y"]


def test_trainer_never_imports_airflow_or_the_plugin_package():
    """``trainer/`` knows nothing of Airflow: the plugin package adds its commands through an
    entry point (``trainer.cli.COMMAND_GROUP``)."""
    found = []
    for path in sorted((REPO / "trainer").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names
                      if n.split(".")[0] in ("airflow", "streamtrain_airflow")]
    assert not found, "\n".join(found)
