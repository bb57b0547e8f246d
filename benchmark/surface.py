"""The reading surface of each folder's training command: the lines a reader opens to understand
`python FOLDER/train.py` -- train.py, every module of its folder it imports (model.py, curves.py)
and every common/ module it reaches through imports, whole files.

    python benchmark/surface.py            # a table per folder; exits 1 past the limits below

Limits (issue 28, 2026-12-07): resnet18's surface at most 2,000 lines (2,394 before); in every
folder train.py + common/ (the part the three share) at most 1,850, no imported module over 250
lines and train.py's main() at most 150 (train.py itself is the story a reader follows, as long
as nanoGPT's; the step and the loop stay in it). The folders differ by model.py and curves.py.
tests/test_siblings.py runs this.
"""
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("resnet18", "resnet34", "se_res_inception")
MAX_SURFACE, MAX_SHARED, MAX_MODULE, MAX_MAIN = 2000, 1850, 250, 150  # MAX_SURFACE: resnet18


def imported(path, folder):
    """The repo files that `path` imports: common/X.py, or FOLDER/X.py of its own folder."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                 if isinstance(node, ast.ImportFrom) and node.module else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "common" and len(parts) > 1:
                found.add(REPO / "common" / f"{parts[1]}.py")
            elif len(parts) == 1 and (REPO / folder / f"{name}.py").exists():
                found.add(REPO / folder / f"{name}.py")
    return {f for f in found if f.exists() and f != path}


def surface(folder):
    """{file: lines} of train.py and everything it reaches."""
    todo, seen = [REPO / folder / "train.py"], {}
    while todo:
        path = todo.pop()
        if path not in seen:
            seen[path] = len(path.read_text().splitlines())
            todo += imported(path, folder)
    return seen


def main_lines(path):
    """Lines of the `def main` in path."""
    node = next(n for n in ast.parse(path.read_text()).body
                if isinstance(n, ast.FunctionDef) and n.name == "main")
    return node.end_lineno - node.lineno + 1


def main():
    ok = True
    for folder in FOLDERS:
        files = surface(folder)
        total, train = sum(files.values()), REPO / folder / "train.py"
        shared = sum(n for path, n in files.items() if path.parent.name == "common") + files[train]
        print(f"{folder}/train.py: {total:,} lines in {len(files)} files, {shared:,} of them in "
              f"train.py and common/; its main() {main_lines(train)} lines")
        for path, n in sorted(files.items(), key=lambda kv: -kv[1]):
            over = n > MAX_MODULE and path != train
            print(f"  {n:5d}  {path.relative_to(REPO)}" + "  <- over the module limit" * over)
            ok &= not over
        ok &= shared <= MAX_SHARED and main_lines(train) <= MAX_MAIN
        ok &= total <= MAX_SURFACE or folder != "resnet18"
    print(f"limits: resnet18 {MAX_SURFACE:,} lines, train.py + common/ {MAX_SHARED:,}, an imported "
          f"module {MAX_MODULE}, train.py's main() {MAX_MAIN}: " + ("met" if ok else "NOT met"))
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
