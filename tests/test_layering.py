"""The floors of the code base: a package imports only the floors below it (read from the source with ast).

    package    may import (besides itself)        what it is
    -------    ------------------------------     -------------------------------------------------
    core       nothing of ours                    ground: errors, columns, metrics, protocol, ...
    cache      core                               the one HDF5 schema, its writer and reader
    pipeline   core, cache                        corpora, feature maths, models, extraction stages
    heads      core, cache, pipeline              head models, training, evaluation, reports
    testing    core, cache, pipeline              helpers for tests, benchmarks and the demo
    cli, demo  everything                         applications on top
"""

import ast
from pathlib import Path

from tests.conftest import REPO

OURS = ("core", "cache", "pipeline", "heads", "testing", "cli", "demo", "tests", "scripts", "benchmarks")
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "cache": {"core"},
    "pipeline": {"core", "cache"},
    "heads": {"core", "cache", "pipeline"},
    "testing": {"core", "cache", "pipeline"},
}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level name)`` of every import in a file, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(root: Path) -> list[str]:
    """``file:line imports X`` for every import of one of our packages that its floor does not allow."""
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, name in imported_packages(path):
                if name in OURS and name != package and name not in allowed:
                    out.append(f"{path.relative_to(root)}:{line} imports {name}")
    return out


def test_every_package_imports_only_the_floors_below_it():
    assert violations(REPO) == []


def test_every_package_of_ours_has_a_floor():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "scripts", "benchmarks"}
    assert packages == set(ALLOWED)


def test_the_check_finds_an_upward_import(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "cache" / "reader.py").write_text("def f():\n    from pipeline.corpora import manifest\n")
    (tmp_path / "pipeline" / "stage.py").write_text("import heads.train\nimport numpy\nfrom cache import paths\n")
    assert violations(tmp_path) == ["cache/reader.py:2 imports pipeline", "pipeline/stage.py:1 imports heads"]
