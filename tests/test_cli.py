"""What users try first: --help, the source projects' own command lines and checkpoints, named
recipes, a copied folder, gradient accumulation, --init and --tensorboard."""
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from common.data import CIFAR100_MEAN, CIFAR100_STD
from conftest import REPO, SMALL, interrupt_in_epoch_2, load_module, run, run_many

FOLDERS = ["resnet18", "resnet34", "se_res_inception"]
TRAIN = {f: load_module(REPO / f / "train.py", f"{f}_train_cli") for f in FOLDERS}


def flag(name):
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("folder", FOLDERS)
def test_help_shows_every_default_and_each_recipes_values(folder):
    train = TRAIN[folder]
    parser = train.build_parser()
    parser.select_recipe(next(iter(train.RECIPES)))
    text = parser.format_help()
    body = text.split("\noptions:", 1)[1]  # past the usage lines
    for action in parser._actions:  # every flag with a default says it
        if action.option_strings and action.default is not None and action.dest != "help":
            start = re.search(rf"\n  {re.escape(action.option_strings[0])}[ ,\n]", body)
            block = body[start.end():].split("\n  -", 1)[0]
            assert "default:" in block, action.option_strings[0]
    for name, recipe in train.RECIPES.items():  # the epilog lists each recipe, value by value
        line = " ".join(re.split(r"\n  (?=\S)", text.split(f"  {name}:", 1)[1])[0].split())
        for key, value in recipe.items():
            shown = (flag(key) if value else "--no-" + key.replace("_", "-")) \
                if isinstance(value, bool) else \
                f"{flag(key)} {' '.join(map(str, value)) if isinstance(value, list) else value}"
            assert shown in line, (name, shown)
    p = run(REPO / folder / "train.py", "--help")  # and the defaults shown are the recipe's
    first = next(iter(train.RECIPES.values()))
    assert f"(default: {first['epochs']})" in p.stdout.split("\n  --epochs EPOCHS", 1)[1][:120]


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_recipe_sets_every_flag_the_parser_leaves_open(folder):
    train = TRAIN[folder]
    parser = train.build_parser()
    open_flags = {dest for dest, default in parser.base_defaults.items()
                  if default is None and dest not in ("help", "resume", "init", "channels_last",
                                                      "data_dir")}
    assert {"epochs", "lr", "weight_decay", "scheduler"} <= open_flags  # the recipe's to say
    for name, recipe in train.RECIPES.items():
        assert open_flags <= recipe.keys(), (name, open_flags - recipe.keys())
        args = train.parse_args(["--recipe", name])
        assert all(getattr(args, k) == v for k, v in recipe.items()), name
        others = {k for r in train.RECIPES.values() for k in r} - recipe.keys()
        for k in others:  # a flag this recipe leaves alone has its own default, not another's
            assert getattr(args, k) == parser.base_defaults[k], (name, k)


def test_the_notebooks_recipe_is_a_ready_command():
    text = (REPO / "resnet18" / "README.md").read_text()
    cmd = re.search(r"python resnet18/train\.py --recipe step-100[^\n`]*", text)
    assert cmd, "resnet18/README.md shows no step-100 command"
    args = TRAIN["resnet18"].parse_args(cmd[0].split()[2:])
    assert (args.epochs, args.scheduler, args.step_epochs, args.gamma, args.batch_size) == (
        100, "step", 30, 0.1, 128)
    assert (args.cutmix_alpha, args.mixup_alpha, args.label_smoothing, args.dropout) == (0, 0, 0, 0)
    assert (args.lr, args.momentum, args.weight_decay, args.rotate, args.erase_p) == (
        0.1, 0.9, 5e-4, 0, 0)
    assert args.jitter == [0.0] * 4 and args.pad == 4 and args.flip


# The command lines the source projects give (the two notebooks give none).
SOURCE_COMMANDS = [
    ("resnet18", "train.py", "--data-dir ./data --batch-size 512 --epochs 150 --lr 0.1 "
     "--weight-decay 5e-4 --num-workers 4"),  # the CIFAR ResNet-18's python src/train.py ...
    ("resnet34", "train.py", ""),  # Enhanced ResNet34: python train.py
    ("se_res_inception", "train.py", ""),  # SE-Res-Inception V2: python train.py, model.py, ...
    ("se_res_inception", "evaluate_superclass.py", ""),
    ("se_res_inception", "plot_metrics.py", ""),
    ("se_res_inception", "gradcam.py", ""),  # its visualize_gradcam.py
    ("se_res_inception", "env_val.py", ""),
]


@pytest.mark.parametrize("folder, script, argv", SOURCE_COMMANDS)
def test_the_source_projects_command_lines_parse(folder, script, argv):
    if script == "train.py":
        args = TRAIN[folder].parse_args(argv.split())
        assert args.num_workers == (4 if "--num-workers" in argv else 0)
        if folder == "resnet18":
            assert (args.batch_size, args.epochs, args.lr, args.weight_decay) == (
                512, 150, 0.1, 5e-4)
        return
    module = load_module(REPO / folder / script, f"{folder}_{script[:-3]}_seedcmd")
    module.build_parser().parse_args(argv.split())


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, resnet18_run, resnet34_run):
    """tiny_runs(folder) -> a run dir: resnet18's and resnet34's (the standard variant) are the
    session's runs; se_res_inception's trains once, when first asked for, 1 epoch on 100
    synthetic images."""
    root, done = tmp_path_factory.mktemp("runs"), {"resnet18": resnet18_run,
                                                   "resnet34": resnet34_run}

    def get(folder):
        if folder not in done:
            extra = ["--variant", "standard"] if folder == "resnet34" else []
            run(REPO / folder / "train.py", *SMALL, "--subset", "100", "--batch-size", "50",
                "--epochs", "1", "--out-dir", root / folder, *extra)
            done[folder] = root / folder
        return done[folder]
    return get


@pytest.mark.slow  # in the default run: test_resnet34.py loads a seed-layout file in-process
@pytest.mark.parametrize("folder", ["resnet34", "se_res_inception"])
def test_a_seeds_model_state_dict_checkpoint_loads(folder, tiny_runs, tmp_path):
    """SE-Res-Inception V2 and the Enhanced ResNet34 save {"model_state_dict": ...,
    "optimizer_state_dict": ..., ...}: no flags, so no normalization; such a file is scored with
    CIFAR-100's constants, as our own checkpoint is when its args say those."""
    ck = torch.load(tiny_runs(folder) / "last.pt", weights_only=True)
    seed_file = tmp_path / "best_model.pt"
    torch.save({"epoch": 5, "model_state_dict": ck["model"], "optimizer_state_dict": {},
                "test_accuracy": 1.0, "train_losses": [4.6, 4.5]}, seed_file)
    ck["args"]["normalize"] = [list(CIFAR100_MEAN), list(CIFAR100_STD)]
    torch.save(ck, tmp_path / "ours.pt")
    flags = ["--checkpoint", seed_file, "--device", "cpu", "--dataset", "synthetic",
             "--test-subset", "100"]
    results = run_many((REPO / folder / "evaluate.py", *flags, "--out-dir", tmp_path / "eval"),
                       (REPO / folder / "gradcam.py", *flags, "--num", "2", "--out-dir",
                        tmp_path / "cam"),
                       (REPO / folder / "evaluate.py", "--checkpoint", tmp_path / "ours.pt",
                        "--device", "cpu", "--out-dir", tmp_path / "eval2"))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    ours = json.loads((tmp_path / "eval" / "report.json").read_text())["top1"]
    assert json.loads((tmp_path / "eval2" / "report.json").read_text())["top1"] == ours


def test_a_state_dict_of_another_network_says_what_does_not_match(tiny_runs, tmp_path):
    ck = torch.load(tiny_runs("resnet18") / "last.pt", weights_only=True)
    torch.save({"model_state_dict": ck["model"]}, tmp_path / "r18.pt")
    p = run(REPO / "se_res_inception" / "evaluate.py", "--checkpoint", tmp_path / "r18.pt",
            "--device", "cpu", check=False)
    err = p.stderr.strip()
    assert p.returncode != 0 and len(err.splitlines()) == 1, err
    assert "does not fit se_res_inception" in err and "missing" in err and "unexpected" in err


@pytest.mark.slow  # every script of the copy in turn; the one-line refusal below stays default
@pytest.mark.parametrize("folder", FOLDERS)
def test_a_copied_folder_is_a_template_for_every_script(folder, tmp_path):
    """The folder and common/ copied side by side (cp -r FOLDER my_net; cp -r common): every
    script of the copy reads and writes runs/my_net/."""
    shutil.copytree(REPO / "common", tmp_path / "common")
    shutil.copytree(REPO / folder, tmp_path / "my_net",
                    ignore=shutil.ignore_patterns("__pycache__", "examples", "*.png"))
    extra = ["--variant", "standard"] if folder == "resnet34" else []
    runs = tmp_path / "runs" / "my_net"
    scripts = {"evaluate.py": "eval/report.json", "gradcam.py": "gradcam/gradcam_grid.png"}
    if folder == "se_res_inception":
        scripts.update({"evaluate_superclass.py": "superclass/superclass.json",
                        "plot_metrics.py": "training_curves.png"})
    trained, *results = run_many(
        (tmp_path / "my_net" / "train.py", *SMALL, "--subset", "100", "--batch-size", "50",
         "--epochs", "1", *extra),
        *[(tmp_path / "my_net" / script,
           *([] if script == "plot_metrics.py" else ["--device", "cpu"])) for script in scripts],
        cwd=tmp_path / "my_net")  # each script from inside the copy, in one interpreter
    assert trained.returncode == 0, trained.stderr
    for name in ("last.pt", "training_curves.png"):
        assert (runs / name).is_file(), name
    assert not (runs / "best.pt").exists()  # no --val-split: nothing to choose it on
    for (script, written), r in zip(scripts.items(), results):
        assert r.returncode == 0 and (runs / written).is_file(), (script, r.stderr)


def test_accumulated_micro_batches_equal_one_big_batch_without_batchnorm(tmp_path):
    flags = [*SMALL, "--subset", "32", "--batch-size", "32", "--epochs", "1", "--cutmix-alpha",
             "1", "--mix-prob", "1"]
    *probes, p = run_many(*[(REPO / "tests" / "probe.py", "resnet18", "nobn", tmp_path, "--",
                             *flags, "--accum-steps", k, "--out-dir", tmp_path / f"k{k}")
                            for k in (1, 4)],
                          (REPO / "resnet18" / "train.py", *flags, "--accum-steps", "3",
                           "--out-dir", tmp_path / "bad"))
    assert all(r.returncode == 0 for r in probes), [r.stderr for r in probes]
    a = torch.load(tmp_path / "k1" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "k4" / "last.pt", weights_only=True)["model"]
    assert all((a[k] - b[k]).abs().max() < 1e-6 for k in a)
    assert p.returncode != 0 and "multiple of 3" in p.stderr


@pytest.mark.slow
def test_resume_after_ctrl_c_with_accumulation_is_bit_exact(tmp_path):
    args = [*SMALL, "--subset", "150", "--batch-size", "30", "--epochs", "2", "--accum-steps", "3"]
    run(REPO / "resnet18" / "train.py", *args, "--out-dir", tmp_path / "a")
    code, rest = interrupt_in_epoch_2([sys.executable, "resnet18/train.py", *args, "--out-dir",
                                       tmp_path / "b", "--progress-every", "0"])
    assert code == 0 and "interrupted: saved" in rest  # the step's micro-batches finished first
    run(REPO / "resnet18" / "train.py", "--resume", "--out-dir", tmp_path / "b")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_a_new_run_from_weights(tiny_runs, tmp_path):
    base = tiny_runs("resnet18") / "last.pt"
    cases = ((["--init", tiny_runs("resnet34") / "last.pt"], "arch='resnet34'"),
             (["--init", base, "--resume", base], "give one of them"))
    ok, *refused = run_many(*[(REPO / "resnet18" / "train.py", *SMALL, "--subset", "100",
                               "--batch-size", "50", "--epochs", "1", *extra, "--out-dir", out)
                              for extra, out in [(["--init", base, "--lr", "1e-9",
                                                   "--width", "16"], tmp_path / "ft")]
                              + [(extra, tmp_path / "x") for extra, _ in cases]])
    assert ok.returncode == 0, ok.stderr
    a = torch.load(base, weights_only=True)
    b = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    assert b["epoch"] == 1 and b["args"]["init"] == str(base)  # a new run: epoch 1 again
    assert torch.allclose(a["model"]["conv1.weight"], b["model"]["conv1.weight"], atol=1e-6)
    assert b["optimizer"]["param_groups"][0]["initial_lr"] != a["optimizer"]["param_groups"][0][
        "initial_lr"]  # a fresh optimizer and schedule
    for (_, message), p in zip(cases, refused):
        err = p.stderr.strip()
        assert p.returncode != 0 and message in err and len(err.splitlines()) == 1, err


@pytest.mark.slow  # an optional extra
def test_tensorboard_logs_the_epoch_rows_or_says_what_to_install(tmp_path, monkeypatch):
    flags = [*SMALL, "--subset", "100", "--batch-size", "50", "--epochs", "1", "--tensorboard"]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        p = run(REPO / "resnet18" / "train.py", *flags, "--out-dir", tmp_path, check=False)
        assert p.returncode != 0 and "pip install -r requirements-tensorboard.txt" in p.stderr
        return
    run(REPO / "resnet18" / "train.py", *flags, "--out-dir", tmp_path / "run")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train_loss", "test_top1", "lr"} <= set(events.Tags()["scalars"])
    # without the package: one line, what to install
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'resnet18')!r}); "
            "sys.modules['torch.utils.tensorboard'] = None; sys.argv = ['train.py',"
            f"*{[str(f) for f in flags]!r}, '--out-dir', {str(tmp_path / 'none')!r}];"
            f"import runpy; runpy.run_path({str(REPO / 'resnet18' / 'train.py')!r}, "
            "run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode != 0 and "pip install -r requirements-tensorboard.txt" in p.stderr


def test_a_folder_copied_without_common_says_what_to_copy(tmp_path):
    """cp -r resnet18 ~/hw1 && python ~/hw1/train.py --help: one line naming what else to copy;
    and the README's way, the folder next to common/, works from anywhere."""
    shutil.copytree(REPO / "resnet18", tmp_path / "hw1", ignore=shutil.ignore_patterns(
        "__pycache__", "examples", "*.png"))
    for script in ("train.py", "evaluate.py", "gradcam.py", "app.py"):
        p = run(tmp_path / "hw1" / script, "--help", cwd=tmp_path, check=False)
        err = p.stderr.strip()
        assert p.returncode != 0 and len(err.splitlines()) == 1, (script, err)
        assert f"needs the repo's common/ folder next to it, in {tmp_path}" in err, err
    readme = (REPO / "README.md").read_text()
    assert "cp -r resnet18 common ~/hw1/" in readme
    (tmp_path / "hw2").mkdir()
    for folder in ("resnet18", "common"):
        shutil.copytree(REPO / folder, tmp_path / "hw2" / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "examples", "*.png"))
    assert "--epochs" in run(tmp_path / "hw2" / "resnet18" / "train.py", "--help",
                             cwd=tmp_path).stdout
