"""The reading surface of each folder's training command: the lines a reader opens to understand
`python FOLDER/train.py` -- train.py, every module of its folder it imports (model.py, curves.py)
and every common/ module it reaches through imports, whole files.

    python benchmark/surface.py            # a table per folder; exits 1 past the limits below

Limits (issue 28, 2026-12-07): at most 2,000 lines a folder, no module over 250 lines.
"""
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("resnet18", "resnet34", "se_res_inception")
MAX_SURFACE, MAX_MODULE = 2000, 250


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


def main():
    ok = True
    for folder in FOLDERS:
        files = surface(folder)
        total = sum(files.values())
        print(f"{folder}/train.py: {total:,} lines in {len(files)} files")
        for path, n in sorted(files.items(), key=lambda kv: -kv[1]):
            flag = "  <- over the module limit" if n > MAX_MODULE else ""
            print(f"  {n:5d}  {path.relative_to(REPO)}{flag}")
            ok &= n <= MAX_MODULE
        ok &= total <= MAX_SURFACE
    print(f"limits: {MAX_SURFACE:,} lines a folder, {MAX_MODULE} a module: "
          + ("met" if ok else "NOT met"))
    return ok


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
