"""The import graph of ``vidgen/``: no cycles, dependencies pointing one way, and every module importable on its own.

The graph is read with ``ast`` from the source, so it covers modules no test happens to import. It counts imports
inside functions too: a function-level import is how a cycle hides (the tokenizers' five-file cycle ran through one),
and it still fails when that function runs while one of the modules is half-initialised. Imports under
``if TYPE_CHECKING:`` never run and are left out. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg`` (its ``__init__``). The implicit import of a module's parent packages is not an edge: every
package's ``__init__`` imports its own submodules, so counting it would make each package a cycle of itself.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vidgen"

#: layer of each top-level part of vidgen: a module imports only its own part or parts of a lower layer
#: (pipelines -> generators -> tokenizers -> data -> text -> families; attention and metrics depend on nothing above
#: them). The model families sit below the tokenizers, which read their VAE specs, and below text (which data's
#: shard encoding uses), which reads how a family's pipeline calls its text encoder.
LAYERS = {
    "errors": 0,
    "vidgen": 1, "precision": 1, "rng": 1, "io": 1, "testing": 1,
    "families": 2,
    "text": 3,
    "data": 4, "attention": 4,
    "tokenizers": 5, "metrics": 5, "parallel": 5,
    "generators": 6,  # vidgen's own generators and the one flow sampler
    "adapters": 7,  # diffusers' transformers as vidgen generators
    "pipelines": 8, "training": 8,
    "distillation": 9,  # losses, the Self-Forcing rollout and the distillation training tasks
    "demo": 10, "cli": 10,
    "app": 11,  # `vidgen serve` (registered by name in vidgen.cli.COMMAND_MODULES; reuses vidgen.cli.generate)
    "__main__": 12,
}
#: the layering rules spelled out (implied by LAYERS; kept so a change of the table cannot drop them silently)
FORBIDDEN = {part: ("pipelines", "generators") for part in ("tokenizers", "io", "data", "attention", "metrics")}
FORBIDDEN["generators"] = ("pipelines", "adapters", "distillation", "training")
FORBIDDEN["families"] = ("pipelines", "generators", "training", "tokenizers", "text", "data")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package ``__init__``) for every module of vidgen."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _runtime_nodes(tree: ast.AST, type_checking: bool = False):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``), unless
    ``type_checking``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if not type_checking and test is not None and ast.unparse(test) in ("TYPE_CHECKING",
                                                                                 "typing.TYPE_CHECKING"):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the vidgen modules it imports (module level and inside functions; with ``type_checking`` also those
    imported only for annotations)."""
    modules = _modules()

    def owner(name: str) -> str:  # the longest prefix of ``name`` that is a module
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, (path, is_package) in modules.items():
        targets = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path)), type_checking):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "vidgen"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package holding this module, ``level - 1`` packages up
                    package = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                if base.split(".")[0] != "vidgen":
                    continue
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else owner(base) for a in node.names}
        graph[name] = targets - {name, ""}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in sorted(graph):
        if start in state:
            continue
        path, iters = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while path:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(sorted(graph[nxt])))
    return None


def _part(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_cycle_finder_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_graph_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    source = tmp_path / "vidgen"
    (source / "sub").mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "sub" / "__init__.py").write_text("from .a import f\n")
    (source / "sub" / "a.py").write_text("def f():\n    from vidgen.sub import b\n")
    (source / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vidgen.sub.a\nfrom ..sub import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", source)
    graph = import_graph()
    assert graph == {"vidgen": set(), "vidgen.sub": {"vidgen.sub.a"}, "vidgen.sub.a": {"vidgen.sub.b"},
                     "vidgen.sub.b": {"vidgen.sub.a"}}
    assert find_cycle(graph) == ["vidgen.sub.a", "vidgen.sub.b", "vidgen.sub.a"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycles_even_through_annotations():
    """An import kept under ``if TYPE_CHECKING:`` to break a cycle still ties the two modules together: a reader
    (and a type checker) follows it. None is left."""
    cycle = find_cycle(import_graph(type_checking=True))
    assert cycle is None, "import cycle through an annotation-only import: " + " -> ".join(cycle)


def test_dependencies_point_one_way():
    graph = import_graph()
    unknown = sorted({_part(m) for m in graph} - set(LAYERS))
    assert not unknown, f"vidgen parts without a layer: {unknown}; add them to LAYERS in {Path(__file__).name}"
    wrong = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                   if _part(t) != _part(m) and LAYERS[_part(t)] >= LAYERS[_part(m)])
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)
    forbidden = sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                       if _part(t) in FORBIDDEN.get(_part(m), ()))
    assert not forbidden, "\n".join(forbidden)


#: runs in a fresh interpreter. The parent imports once the other modules (torch, diffusers, ...) that vidgen's
#: modules import at their top, read from the source, so that the forked child for each vidgen module runs mostly vidgen
#: code (seconds in all instead of minutes), with nothing of vidgen loaded before it. Two children run at a time.
_FORK_EACH = r"""
import importlib, json, os, sys, traceback


def start_child(task):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            message, code = task(), 0
        except BaseException:
            message, code = traceback.format_exc(), 1
        os.write(write, message.encode())
        os._exit(code)
    os.close(write)
    return pid, read


def finish_child(pid, read):
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    return message, os.waitpid(pid, 0)[1]


package, names, preload = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for module, names in preload:
    try:
        loaded = importlib.import_module(module)
        for name in names:  # ``from diffusers import X``: X of a lazy package loads its own submodules
            getattr(loaded, name, None)
    except BaseException:
        pass  # an optional dependency that is missing: the vidgen module that needs it is tried below all the same
assert not [m for m in sys.modules if m.split(".")[0] == package], f"{package} was loaded before the forks"
failures = {}
for first in range(0, len(names), 2):  # two children at a time: each is one process on one core
    batch = names[first:first + 2]
    children = [start_child(lambda name=name: importlib.import_module(name) and "") for name in batch]
    for name, child in zip(batch, children):
        message, status = finish_child(*child)
        if status:
            failures[name] = message or f"exit status {status}"
print(json.dumps(failures))
"""


def third_party_imports(package: str, files) -> list[list]:
    """``[module, names]`` for the modules outside ``package`` that ``files`` import at module level (absolute imports
    only), with the names taken from each (``from diffusers import WanPipeline``: a lazy package's attribute)."""
    out: dict[str, set] = {}
    for path in files:
        for node in ast.parse(Path(path).read_text()).body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    out.setdefault(alias.name, set())
            elif isinstance(node, ast.ImportFrom) and not node.level:
                out.setdefault(node.module, set()).update(a.name for a in node.names if a.name != "*")
    return [[m, sorted(names)] for m, names in sorted(out.items()) if m.split(".")[0] != package]


def modules_failing_alone(package: str, names: list[str], cwd: Path) -> dict[str, str]:
    """Module -> traceback, for each of ``names`` (modules of ``package``, found from ``cwd``) that fails to import
    as the first module of its package in a fresh process."""
    preload = third_party_imports(package, (cwd / package).rglob("*.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(cwd), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _FORK_EACH, package, json.dumps(names), json.dumps(preload)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@needs_fork
def test_a_module_that_relies_on_an_earlier_import_is_caught(tmp_path):
    """``a`` uses ``fake.b`` without importing it: fine after ``fake.b`` was imported, broken on its own."""
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "__init__.py").write_text("")
    (tmp_path / "fake" / "b.py").write_text("VALUE = 1\n")
    (tmp_path / "fake" / "a.py").write_text("import fake\nVALUE = fake.b.VALUE\n")
    failures = modules_failing_alone("fake", ["fake.b", "fake.a"], tmp_path)
    assert list(failures) == ["fake.a"] and "has no attribute 'b'" in failures["fake.a"]


@needs_fork
def test_every_module_imports_on_its_own():
    """Each module imported first, alone (a module that works only because another imported something before it
    breaks for a user who imports it directly). ``__main__`` modules run their command when imported: left out."""
    names = sorted(name for name in _modules() if not name.endswith("__main__"))
    failures = modules_failing_alone("vidgen", names, ROOT)
    assert not failures, "\n\n".join(f"{name}:\n{error}" for name, error in failures.items())
