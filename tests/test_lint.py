"""Static checks: no undefined names, unused imports or variables, no syntax errors (ruff F, E9)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_no_errors():
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run([str(ruff), "check", "--select", "F,E9", "--output-format", "concise",
                           "trainer", "pstable", "plugins", "dags", "tests", "bench"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
