"""Shared test helpers: run a script in a fresh process, or load a folder's module by file path
(every folder has a model.py, so they are never imported by bare name)."""
import importlib.util
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "synthetic", "--device", "cpu", "--progress-every", "1000"]
SMALL = [*TINY, "--test-subset", "100"]  # train.py: and test on 100 images (10,000 by default)


def run(script, *args, cwd=REPO, check=True, timeout=600):
    """Run `python script args...`; returns the CompletedProcess (stdout+stderr as text)."""
    p = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, text=True,
                       capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def load_module(path, name):
    """Import a file under a unique module name, with its folder first on sys.path."""
    path = Path(path)
    sys.path.insert(0, str(path.parent))
    try:
        sys.modules.pop("model", None)  # the sibling folders' model.py share this name
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop("model", None)
    return mod


def interrupt_in_epoch_2(cmd, cwd=REPO, timeout=120):
    """Start `cmd` (a 2-epoch train.py run with --progress-every 0), press Ctrl-C at its first
    progress line of epoch 2, let it finish -> (exit code, what it printed after the signal)."""
    p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    seen_epoch = False
    for line in p.stdout:
        seen_epoch |= line.startswith("epoch 1/2")
        if seen_epoch and "batch" in line:
            p.send_signal(signal.SIGINT)
            break
    rest = p.stdout.read()
    return p.wait(timeout=timeout), rest


@pytest.fixture(scope="session")
def resnet18_run(tmp_path_factory):
    """One tiny resnet18 run for the whole session: 2 epochs on 200 synthetic images (40 held
    out to pick best.pt on), with EMA, a quarter of the width. Tests never write into it."""
    out = tmp_path_factory.mktemp("shared") / "r18"
    run("resnet18/train.py", *SMALL, "--subset", "200", "--val-split", "40", "--batch-size", "40",
        "--epochs", "2", "--ema", "0.9", "--width", "16", "--out-dir", out)
    return out



def readme_command(folder, prefix):
    """The command in FOLDER/README.md that starts with `prefix`, continuations joined."""
    text = (REPO / folder / "README.md").read_text()
    m = re.search(re.escape(prefix) + r"(?:[^\n]*\\\n)*[^\n]*", text)
    assert m, f"{folder}/README.md has no command starting {prefix!r}"
    return shlex.split(m.group(0).replace("\\\n", " "))


@pytest.fixture(scope="session")
def resnet34_run(tmp_path_factory):
    """The ResNet-34 pipeline notebook's command from resnet34/README.md, shrunk: the standard
    variant, 3 one-step epochs, SGDR cycles of 1 then 2 steps, a checkpoint kept every epoch."""
    out = tmp_path_factory.mktemp("shared") / "sgdr"
    argv = readme_command("resnet34", "python resnet34/train.py --recipe sgdr-400-mixup-cutmix")
    assert argv[:2] == ["python", "resnet34/train.py"]
    run(argv[1], *argv[2:], *SMALL, "--subset", "25", "--batch-size", "25", "--epochs", "3",
        "--t0", "1", "--save-every", "1", "--out-dir", out)
    return out


# run_many: several command lines in ONE fresh interpreter, each as `python script args` would run
# it (its folder first on sys.path, run as __main__, from `cwd`), so torch is imported once, not
# once a command. What each leaves is what a shell would see: the exit code the interpreter
# gives its SystemExit (None -> 0, an int, or a message printed to stderr -> 1), a traceback
# (exit 1) for anything else, and the stdout/stderr text.
_MANY = r"""
import contextlib, io, json, os, runpy, sys, traceback
results = []
for script, args, cwd in json.loads(sys.argv[1]):
    out, err, code = io.StringIO(), io.StringIO(), 0
    folder = os.path.dirname(os.path.abspath(script))
    saved_path, saved_cwd = list(sys.path), os.getcwd()
    sys.path.insert(0, folder)
    sys.modules.pop("model", None)  # each folder has its own model.py
    sys.argv = [script] + args
    os.chdir(cwd)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    os.chdir(saved_cwd)
    sys.path[:] = saved_path
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print("\n@@RESULTS@@" + json.dumps(results))
"""


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_many(*commands, cwd=REPO, timeout=600):
    """[(script, arg, ...), ...] -> [Result with returncode, stdout, stderr], one per command."""
    import json
    cases = [(str(Path(REPO, c[0])), [str(a) for a in c[1:]], str(cwd)) for c in commands]
    p = subprocess.run([sys.executable, "-c", _MANY, json.dumps(cases)], cwd=cwd, text=True,
                       capture_output=True, timeout=timeout)
    if "@@RESULTS@@" not in p.stdout:
        raise AssertionError(f"run_many died ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return [Result(**r) for r in json.loads(p.stdout.rsplit("@@RESULTS@@", 1)[1])]
