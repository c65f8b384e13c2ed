"""Notebook conventions (DEVELOPERS guide, issue 2), checked on every committed notebook.

- the manifest lists exactly the notebooks in notebooks/, each paired with a py:percent file
  that jupytext keeps in sync;
- notebooks are committed without outputs;
- one cell tagged ``parameters`` (preset defaulting to "cpu", seed, workdir, figures_dir,
  overrides), validated by the next cell through ``notebook.setup(<its own name>, ...)``, which
  fails there naming a bad parameter; the last code cell calls ``ctx.finish()``.
"""

import ast
import json

import jupytext
import pytest

from rlcv_lib import reproduce
from rlcv_lib.notebook import repo_root

NOTEBOOKS = repo_root() / "notebooks"
SPECS = reproduce.load_manifest()
NAMES = [s.name for s in SPECS]


def _cells(name):
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())["cells"]


def _code_cells(name):
    return [c for c in _cells(name) if c["cell_type"] == "code"]


def _source(cell):
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def test_manifest_matches_the_notebooks_dir():
    assert NAMES, "the manifest lists no notebook"
    on_disk = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert sorted(NAMES) == on_disk
    for name in NAMES:
        assert (NOTEBOOKS / f"{name}.py").exists(), f"{name}.ipynb has no paired {name}.py"


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    for cell in _code_cells(name):
        assert not cell.get("outputs"), f"{name}: a cell has outputs"
        assert cell.get("execution_count") is None, f"{name}: a cell has an execution count"


@pytest.mark.parametrize("name", NAMES)
def test_paired_py_percent_is_in_sync(name):
    py = jupytext.read(NOTEBOOKS / f"{name}.py", fmt="py:percent")
    nb = _cells(name)
    assert len(py.cells) == len(nb), f"{name}: .py has {len(py.cells)} cells, .ipynb {len(nb)}"
    for i, (a, b) in enumerate(zip(py.cells, nb, strict=True)):
        assert a.cell_type == b["cell_type"], f"{name} cell {i}: type differs"
        assert a.source.strip() == _source(b).strip(), f"{name} cell {i}: source differs; " \
            f"run `jupytext --sync notebooks/{name}.py`"
        assert a.metadata.get("tags", []) == b["metadata"].get("tags", []), f"{name} cell {i}"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_then_validation_then_finish(name):
    code = _code_cells(name)
    tagged = [i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{name}: expected one cell tagged `parameters`, found {len(tagged)}"
    i = tagged[0]
    values = {}
    for node in ast.parse(_source(code[i])).body:
        assert isinstance(node, ast.Assign), f"{name}: parameters cell must hold assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    for key in ("preset", "seed", "workdir", "figures_dir", "overrides"):
        assert key in values, f"{name}: parameters cell lacks `{key}`"
    assert values["preset"] == "cpu"
    nxt = _source(code[i + 1])
    call = next((n for n in ast.walk(ast.parse(nxt)) if isinstance(n, ast.Call)
                 and getattr(n.func, "attr", "") == "setup"), None)
    assert call is not None, f"{name}: the cell after `parameters` must call notebook.setup"
    assert ast.literal_eval(call.args[0]) == name, f"{name}: setup() must get its own name"
    given = {k.arg for k in call.keywords}
    assert {"preset", "seed", "workdir", "figures_dir", "overrides"} <= given
    assert "ctx.finish()" in _source(code[-1]), f"{name}: last code cell must call ctx.finish()"


def test_bad_parameter_fails_in_the_validation_cell(tmp_path):
    """Really executes the first notebook with a bad preset: it must stop at the setup cell."""
    import papermill as pm

    spec = SPECS[0]
    out = tmp_path / "bad.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(spec.path), str(out), kernel_name="python3", progress_bar=False,
                            parameters=reproduce.parameters("cpux", 0, tmp_path / "w",
                                                            tmp_path / "f"))
    assert "preset: unknown preset 'cpux'" in str(err.value)
    executed = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
    failing = [i for i, c in enumerate(executed)
               if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    injected = next(i for i, c in enumerate(executed)
                    if "injected-parameters" in c["metadata"].get("tags", []))
    assert failing == [injected + 1]
