"""The layout holds: one home for each shared piece of evaluation, docs inside the repository.

These read the package's source (AST), so they fail when a second copy of a shared piece
appears: a Pearson correlation, a best-state keeper, a chunked loop of model calls, a
wrong-image control table, or a seed offset written as ``seed + <number>``.
"""

import ast
import re
from pathlib import Path

import pytest

from rlcv_lib.notebook import repo_root

ROOT = repo_root()
HOME = ROOT / "rlcv_lib" / "core" / "evaluate.py"
SOURCES = sorted([*(ROOT / "rlcv_lib").rglob("*.py"), *(ROOT / "notebooks").glob("*.py")])
JITTED = {"greedy_jit", "sample_jit", "teacher_forced_jit", "beam_search_jit"}
ENGINE = {ROOT / "rlcv_lib" / "core" / n for n in ("sampling.py", "steps.py", "evaluate.py")}


def _trees():
    return {p: ast.parse(p.read_text(), filename=str(p)) for p in SOURCES}


def _name(node) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _sites(check) -> list[str]:
    """``path:line`` of every node for which ``check(node, path)`` is true."""
    out = []
    for path, tree in _trees().items():
        out += [f"{path.relative_to(ROOT)}:{n.lineno}" for n in ast.walk(tree) if check(n, path)]
    return out


def _only_in(sites: list[str], *homes: Path) -> list[str]:
    allowed = {str(h.relative_to(ROOT)) for h in homes}
    return [s for s in sites if s.rsplit(":", 1)[0] not in allowed]


def test_one_pearson_correlation():
    sites = _sites(lambda n, p: isinstance(n, ast.Call) and _name(n.func) == "corrcoef")
    assert sites and not _only_in(sites, HOME), sites


def test_one_best_state_keeper():
    def keeps_a_state(n, p):  # a class that offers and restores states, or a state snapshot
        if isinstance(n, ast.ClassDef):
            methods = {m.name for m in n.body if isinstance(m, ast.FunctionDef)}
            return {"offer", "restore"} <= methods
        return (isinstance(n, ast.Call) and _name(n.func) == "map" and len(n.args) == 2
                and isinstance(n.args[1], ast.Call) and _name(n.args[1].func) == "state")

    sites = _sites(keeps_a_state)
    assert sites and not _only_in(sites, HOME), sites


def test_one_chunked_loop_of_model_calls():
    def loop_or_jit(n, p):
        chunked = (isinstance(n, ast.Call) and _name(n.func) == "range" and len(n.args) == 3
                   and _name(n.args[2]) == "chunk" and "data" not in p.parts)  # data: no model
        jitted = isinstance(n, ast.Call) and _name(n.func) in JITTED and p not in ENGINE
        return chunked or jitted

    sites = _sites(loop_or_jit)
    assert sites and not _only_in(sites, HOME), sites


def test_one_wrong_image_control_table():
    sites = _sites(lambda n, p: isinstance(n, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value in ("NLL true image", "true image")
        for k in n.keys))
    assert sites and not _only_in(sites, HOME), sites


def test_seed_offsets_live_in_one_table():
    def offset(n, p):
        return (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add)
                and any("seed" in _name(side) for side in (n.left, n.right))
                and any(isinstance(side, ast.Constant) for side in (n.left, n.right)))

    assert not _sites(offset)
    tree = ast.parse(HOME.read_text())
    tables = [n for n in ast.walk(tree) if isinstance(n, ast.AnnAssign)
              and _name(n.target) == "SEED_OFFSETS"]
    assert len(tables) == 1


@pytest.mark.parametrize("folder", ["rlcv_lib", "tests", "notebooks", "benchmarks",
                                    "experiments", "docs"])
def test_docs_and_comments_cite_only_the_repository(folder):
    """Design facts live in docs/design.md; nothing cites a document outside the repository."""
    outside = re.compile(r"DESIGN(\.md)? ?§|REFERENCE\.md|shared/DESIGN|\.\./shared")
    hits = [f"{p.relative_to(ROOT)}:{i}"
            for p in sorted((ROOT / folder).rglob("*")) if p.suffix in (".py", ".md", ".sh")
            and p.name != "test_layout.py"
            for i, line in enumerate(p.read_text().splitlines(), 1) if outside.search(line)]
    assert not hits, hits


@pytest.mark.parametrize("package", ["core", "tasks"])
def test_every_core_and_task_module_has_a_test_module(package):
    """``rlcv_lib/core/<name>.py`` is tested by ``tests/test_<name>.py``, a task package's
    ``rlcv_lib/tasks/<task>/<name>.py`` by ``tests/test_<task>_<name>.py``."""
    tests = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    missing = []
    for p in sorted((ROOT / "rlcv_lib" / package).rglob("*.py")):
        if p.name in ("__init__.py", "__main__.py"):
            continue
        parts = p.relative_to(ROOT / "rlcv_lib").parts
        names = {f"test_{p.stem}"}
        if parts[0] == "tasks" and len(parts) == 3:
            names = {f"test_{parts[1]}_{p.stem}"}
        if not names & tests:
            missing.append(str(p.relative_to(ROOT)))
    assert not missing, missing
