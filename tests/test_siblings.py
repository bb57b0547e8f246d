"""The sibling scripts of the three folders: outside their docstring, the model import and a
marked block at the top, they are identical, so a fix in one is a fix in all (CONTRIBUTING.md)."""
import re

import pytest

from conftest import REPO, load_module

FOLDERS = ["resnet18", "resnet34", "se_res_inception"]
BLOCK = re.compile(r"# ---- the (recipe|model).*?# ---- everything below is shared[^\n]*\n", re.S)


def shared_part(folder, script):
    text = (REPO / folder / script).read_text()
    assert BLOCK.search(text), f"{folder}/{script} has no block markers"
    text = BLOCK.sub("", text)
    text = re.sub(r'\A""".*?"""\n', "", text, flags=re.S)  # the docstring
    return [ln for ln in text.splitlines() if not ln.startswith("from model import")]


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "gradcam.py"])
@pytest.mark.parametrize("folder", FOLDERS[1:])
def test_script_is_a_sibling_of_resnet18s(folder, script):
    ours, theirs = shared_part("resnet18", script), shared_part(folder, script)
    diff = [f"{i}: {a!r} != {b!r}" for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not diff and len(ours) == len(theirs), "\n".join(diff[:5])


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_script_imports_another_script(folder):
    """Every dependency is an import of common/ or of the folder's own modules: model.py and
    curves.py (the training figure); no script (a file that runs as a program) is imported."""
    for path in (REPO / folder).glob("*.py"):
        for line in path.read_text().splitlines():
            m = re.match(r"(?:from|import) (\w+)", line)
            if m and (REPO / folder / f"{m[1]}.py").exists():
                assert m[1] in ("model", "curves"), f"{path.name} imports {m[1]}.py: {line}"
        assert "import_module" not in path.read_text() and "spec_from_file_location" not in \
            path.read_text(), path


def test_the_training_commands_reading_surface_stays_within_its_limits(capsys):
    """Issue 28: what a reader opens to follow `python FOLDER/train.py` (train.py and every repo
    module it imports, whole files) stays within benchmark/surface.py's limits: resnet18's at
    most 2,000 lines (2,394 before), train.py + common/ 1,850, no imported module over 250 lines,
    main() at most 150."""
    surface = load_module(REPO / "benchmark" / "surface.py", "surface_for_test")
    assert surface.main(), capsys.readouterr().out
