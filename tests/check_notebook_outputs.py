"""Run by `make test` after nbval executed the smoke notebooks (not collected by unit tests).

Checks that each notebook wrote every figure and finite results entry the manifest declares.
RLCV_NOTEBOOK_OUTPUTS is the directory `rlcv_lib.reproduce prepare` used.
"""

import json
import os
from pathlib import Path

import pytest

from rlcv_lib import reproduce
from rlcv_lib.notebook import assert_finite

OUT = Path(os.environ.get("RLCV_NOTEBOOK_OUTPUTS", "/nonexistent"))
SPECS = reproduce.load_manifest()


def test_outputs_dir_given():
    assert OUT.is_dir(), "set RLCV_NOTEBOOK_OUTPUTS to the dir of `reproduce prepare --out`"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_notebook_wrote_what_it_declares(spec):
    figures = OUT / "figures"
    for name in spec.figures:
        path = figures / name
        assert path.exists() and path.stat().st_size > 0, f"{spec.name} did not write {name}"
    fragment = json.loads((figures / "results" / f"{spec.name}.json").read_text())
    assert fragment["preset"] == "smoke"
    recorded = {f"{e['task']}/{e['metric']}" for e in fragment["entries"]}
    missing = set(spec.results) - recorded
    assert not missing, f"{spec.name} did not record {sorted(missing)}"
    undeclared = recorded - set(spec.results)
    assert not undeclared, f"{spec.name} recorded {sorted(undeclared)} not in the manifest"
    assert_finite(fragment["entries"])
