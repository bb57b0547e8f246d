"""Shared test helpers: run a script in a fresh process, or load a folder's module by file path
(every folder has a model.py, so they are never imported by bare name)."""
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = ["--dataset", "synthetic", "--device", "cpu", "--progress-every", "1000"]


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
