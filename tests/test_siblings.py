"""The three train.py files are siblings: outside the docstring, the model import and the recipe
block they are identical, so a fix in one is a fix in all (STYLE.md rule 5)."""
import re

import pytest

from conftest import REPO

FOLDERS = ["resnet18", "resnet34", "se_res_inception"]
RECIPE = re.compile(r"# ---- the recipe.*?# ---- everything below is shared[^\n]*\n", re.S)


def shared_part(folder):
    text = (REPO / folder / "train.py").read_text()
    assert RECIPE.search(text), f"{folder}/train.py has no recipe block markers"
    text = RECIPE.sub("", text)
    text = re.sub(r'\A""".*?"""\n', "", text, flags=re.S)  # the docstring
    return [ln for ln in text.splitlines() if not ln.startswith("from model import")]


@pytest.mark.parametrize("folder", FOLDERS[1:])
def test_train_py_is_a_sibling_of_resnet18(folder):
    ours, theirs = shared_part("resnet18"), shared_part(folder)
    diff = [f"{i}: {a!r} != {b!r}" for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not diff and len(ours) == len(theirs), "\n".join(diff[:5])


@pytest.mark.parametrize("folder", FOLDERS[1:])
def test_evaluate_py_differs_only_in_how_it_rebuilds_the_model(folder):
    """Everything after load_model (the data, prediction, report and plots) is the same code."""
    tail = lambda f: (REPO / f / "evaluate.py").read_text().split("\ndef test_split")[1]  # noqa
    assert tail(folder) == tail("resnet18")
