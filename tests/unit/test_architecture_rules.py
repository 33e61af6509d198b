"""Rules of the generation path's design, read from the source with ``ast``: every pipeline's ``__call__`` builds an
explicit call object (no ``locals()``), and classifier-free guidance has one formula in the code that samples and
trains generators (``vidgen.generators.sampling.
guide``), which every sampler calls."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _calls_of(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


def test_no_locals_in_pipelines():
    found = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "vidgen" / "pipelines").rglob("*.py"))
             if (lines := _calls_of(p, "locals"))}
    assert not found, f"locals() in the pipelines (build the call object from the arguments): {found}"


def _guidance_formulas(tree: ast.AST) -> list[int]:
    """Lines of ``a + s * (b - a)`` (the guidance formula, any names; ``a`` not a constant) in ``tree``."""
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)) or isinstance(node.left, ast.Constant):
            continue
        scaled = node.right
        if not (isinstance(scaled, ast.BinOp) and isinstance(scaled.op, ast.Mult)):
            continue
        diff = scaled.right if isinstance(scaled.right, ast.BinOp) else scaled.left
        if isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub) and \
                ast.dump(diff.right) == ast.dump(node.left):
            lines.append(node.lineno)
    return lines


def test_the_formula_finder_finds_the_formula():
    assert _guidance_formulas(ast.parse("x = neg + scale * (pos - neg)\ny = a + b * c")) == [1]
    assert _guidance_formulas(ast.parse("out = u + (c - u) * s")) == [1]
    assert _guidance_formulas(ast.parse("frame = 1 + (latent - 1) * tc")) == []


#: the parts of vidgen that sample or train generators (elsewhere ``a + s * (b - a)`` is a plain interpolation)
GENERATION = ("generators", "pipelines", "families", "training", "parallel")


def test_one_guidance_formula():
    found = {}
    for path in sorted(p for part in GENERATION for p in (ROOT / "vidgen" / part).rglob("*.py")):
        lines = _guidance_formulas(ast.parse(path.read_text(), filename=str(path)))
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    assert list(found) == ["vidgen/generators/sampling.py"] and len(found["vidgen/generators/sampling.py"]) == 1, (
        f"the guidance formula appears outside vidgen.generators.sampling.guide: {found}")
