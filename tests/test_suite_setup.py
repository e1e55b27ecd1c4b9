"""The suite's own set-up: the notebooks' cells stay on one xdist worker, or the suite stops saying why."""

import importlib.util
from types import SimpleNamespace

import pytest

from pneumo_utils.config import PROJECT_ROOT


def _root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest_under_test", PROJECT_ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook_items_that_lost_their_group_stop_the_suite_with_the_reason():
    hook = _root_conftest().pytest_xdist_node_collection_finished
    node = SimpleNamespace(config=SimpleNamespace(getoption=lambda name, default=None: "loadgroup"))
    hook(node, ["tests/test_x.py::test_a", "notebooks/01_eda.ipynb::Cell 0@notebooks"])  # grouped: nothing happens
    with pytest.raises(pytest.exit.Exception, match="lost their xdist group"):
        hook(node, ["notebooks/01_eda.ipynb::Cell 0", "notebooks/01_eda.ipynb::Cell 1@notebooks"])
    other = SimpleNamespace(config=SimpleNamespace(getoption=lambda name, default=None: "load"))
    hook(other, ["notebooks/01_eda.ipynb::Cell 0"])  # not asked to group: nothing to check
