"""The floors of the code base: a module imports only the floors below it (read from the source with ast:
absolute and relative imports, imports inside functions, ``importlib.import_module`` of a literal name).

    package    may import (besides itself)        what it is
    -------    ------------------------------     -------------------------------------------------
    core       nothing of ours                    ground: errors, columns, metrics, protocol, ...
    cache      core                               the one HDF5 schema, its writer and reader
    pipeline   core, cache                        corpora, feature maths, models, extraction stages
    heads      core, cache, pipeline              head models, training, evaluation, reports
    testing    core, cache, pipeline              helpers for tests, benchmarks and the demo
    cli, demo  everything                         applications on top

Inside ``pipeline/`` the rooms have floors too: ``features`` (pure feature maths) and ``runtime`` (processes and
devices) import only the ground; ``models`` may use ``features``; ``corpora`` (manifests) may use ``features``;
``stages`` build on those (never on ``corpora``); ``extract`` runs the stages; ``launch`` spreads ``extract`` over
processes. Inside ``heads/``: ``training`` (fold tensors, models, the loop, runs) is the ground; ``evaluation``
(metrics, intervals) and ``deployment`` (model folders, export, predict) use it; ``reporting`` (figures, tables,
HTML) uses those three; ``studies`` (ablations, cross-corpus) sit on top.
"""

import ast
from pathlib import Path

from tests.conftest import REPO

OURS = ("core", "cache", "pipeline", "heads", "testing", "cli", "demo", "tests", "scripts", "benchmarks")
TOP_LEVEL_MODULES = {"cli.py", "demo.py"}  # the applications; any other module at the top needs a floor here
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "cache": {"core"},
    "pipeline": {"core", "cache"},
    "heads": {"core", "cache", "pipeline"},
    "testing": {"core", "cache", "pipeline"},
}
PIPELINE_ROOMS: dict[str, set[str]] = {  # room -> the rooms of pipeline/ it may import (besides itself)
    "pipeline.features": set(),
    "pipeline.runtime": set(),
    "pipeline.models": {"pipeline.features"},
    "pipeline.corpora": {"pipeline.features"},
    "pipeline.stages": {"pipeline.features", "pipeline.runtime", "pipeline.models"},
    "pipeline.extract": {"pipeline.features", "pipeline.runtime", "pipeline.models", "pipeline.stages"},
    "pipeline.launch": {"pipeline.features", "pipeline.runtime", "pipeline.models", "pipeline.stages",
                        "pipeline.extract"},
    "pipeline": set(),  # the package's __init__: its docstring
}
HEADS_ROOMS: dict[str, set[str]] = {  # room -> the rooms of heads/ it may import (besides itself)
    "heads.training": set(),
    "heads.evaluation": {"heads.training"},
    "heads.deployment": {"heads.training"},
    "heads.reporting": {"heads.training", "heads.evaluation", "heads.deployment"},
    "heads.studies": {"heads.training", "heads.evaluation", "heads.reporting"},
    "heads": set(),  # the package's __init__: its docstring
}
ROOMS = {"pipeline": PIPELINE_ROOMS, "heads": HEADS_ROOMS}


def module_name(path: Path, root: Path) -> list[str]:
    """``pipeline/stages/speech.py`` -> ``["pipeline", "stages", "speech"]`` (a package's ``__init__``: the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in a file: ``import a.b``, ``from a.b import c`` (as ``a.b.c`` when
    ``c`` may be a module), relative imports resolved against the file's package, and
    ``importlib.import_module("a.b")`` / ``import_module("a.b")`` with a literal name; also inside functions."""
    found = []
    package = module_name(path, root)
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x, from ..a import b
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                module = node.module or ""
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def room_of(dotted: list[str]) -> str:
    """The room of a pipeline or heads module: ``pipeline.<sub-package or module>`` (``pipeline`` for the package
    itself)."""
    return ".".join(dotted[:2])


def violations(root: Path) -> list[str]:
    """``file:line imports X`` for every import of one of our modules that its floor (or room) does not allow."""
    out = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            here = module_name(path, root)
            for line, module in imported_modules(path, root):
                parts = module.split(".")
                name = parts[0]
                if name in OURS and name != package and name not in allowed:
                    out.append(f"{path.relative_to(root)}:{line} imports {name}")
                elif package in ROOMS and name == package:
                    rooms = ROOMS[package]
                    room, target = room_of(here), room_of(parts)
                    if target != room and target in rooms and target not in rooms.get(room, set()):
                        out.append(f"{path.relative_to(root)}:{line} imports {target} (room {room})")
    return out


def test_every_package_imports_only_the_floors_below_it():
    assert violations(REPO) == []


def test_every_package_and_top_level_module_of_ours_has_a_floor():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "scripts", "benchmarks"}
    assert packages == set(ALLOWED)
    assert {p.name for p in REPO.glob("*.py")} == TOP_LEVEL_MODULES
    for package, known in ROOMS.items():
        rooms = {room_of(module_name(p, REPO)) for p in (REPO / package).rglob("*.py")}
        assert rooms == set(known), package


def test_the_check_finds_an_upward_import(tmp_path):
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "cache" / "reader.py").write_text("def f():\n    from pipeline.corpora import manifest\n")
    (tmp_path / "pipeline" / "stage.py").write_text("import heads.train\nimport numpy\nfrom cache import paths\n")
    assert violations(tmp_path) == ["cache/reader.py:2 imports pipeline", "pipeline/stage.py:1 imports heads"]


def test_the_check_finds_relative_and_importlib_imports_and_rooms_inside_pipeline(tmp_path):
    for package in (*ALLOWED, "pipeline/features", "pipeline/stages"):
        (tmp_path / package).mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "features" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "features" / "maths.py").write_text(
        "from ..stages import speech\nfrom ...heads import train\n")
    (tmp_path / "cache" / "writer.py").write_text("import importlib\nm = importlib.import_module('heads.report')\n")
    (tmp_path / "pipeline" / "stages" / "speech.py").write_text("from ..features import maths\nfrom . import runner\n")
    assert violations(tmp_path) == [
        "cache/writer.py:2 imports heads",
        "pipeline/features/maths.py:1 imports pipeline.stages (room pipeline.features)",
        "pipeline/features/maths.py:2 imports heads",
    ]


def import_cycles(root: Path, packages: tuple[str, ...] = tuple(ALLOWED)) -> list[list[str]]:
    """Groups of our modules that import each other in a circle (strongly connected components of the import
    graph, imports inside functions included: a late import hides a cycle, it does not remove it)."""
    modules = {".".join(module_name(p, root)): p for package in packages for p in (root / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module in imported_modules(path, root):
            parts = module.split(".")
            found = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in modules),
                         None)
            if found and found != name and not name.startswith(found + "."):  # a package's own __init__ is not a cycle
                targets.add(found)
        graph[name] = targets
    order, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return cycles


def test_the_check_finds_an_import_from_a_room_above_inside_heads(tmp_path):
    for package in (*ALLOWED, "heads/training", "heads/reporting"):
        (tmp_path / package).mkdir(exist_ok=True)
    (tmp_path / "heads" / "training" / "train.py").write_text("from heads.reporting import plots\n")
    (tmp_path / "heads" / "reporting" / "plots.py").write_text("from ..training import train\n")
    assert violations(tmp_path) == ["heads/training/train.py:1 imports heads.reporting (room heads.training)"]


def test_no_modules_of_ours_import_each_other_in_a_circle():
    assert import_cycles(REPO) == []


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    (tmp_path / "heads").mkdir()
    (tmp_path / "heads" / "folder.py").write_text("def load():\n    from heads.predict import run\n")
    (tmp_path / "heads" / "predict.py").write_text("from heads.folder import load\n")
    (tmp_path / "heads" / "train.py").write_text("from heads import folder\n")
    assert import_cycles(tmp_path, ("heads",)) == [["heads.folder", "heads.predict"]]
