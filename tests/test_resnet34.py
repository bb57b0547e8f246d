"""resnet34/: both variants, both recipes from the command line, the lr range test, the sweep and
the convolution explorer. ResNet-34 is 21-30 M parameters, so every run here is a few batches."""
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from common.checkpoint import load_checkpoint
from common.inference import load_model
from conftest import REPO, TINY, load_module, run, run_many

model_mod = load_module(REPO / "resnet34" / "model.py", "resnet34_model")
lr_find = load_module(REPO / "resnet34" / "lr_find.py", "resnet34_lr_find")
conv = load_module(REPO / "resnet34" / "conv_explorer.py", "resnet34_conv_explorer")
evaluate = load_module(REPO / "resnet34" / "evaluate.py", "resnet34_evaluate")
sweep = load_module(REPO / "resnet34" / "sweep.py", "resnet34_sweep")


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_of_both_variants():
    enhanced, standard = model_mod.resnet34("enhanced"), model_mod.resnet34("standard")
    assert n_params(enhanced) == 30_032_292  # the Enhanced ResNet34 project's figure
    assert n_params(standard) == 21_328_292
    assert [len(getattr(enhanced, f"layer{i}")) for i in range(1, 5)] == [5, 5, 5, 5]
    assert [len(getattr(standard, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert enhanced.dropout.p == 0.3
    assert standard.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(ValueError, match="variant"):
        model_mod.resnet34("resnet50")


def test_standard_variant_is_torchvision_resnet34_with_the_cifar_stem():
    tv = torchvision.models.resnet34(num_classes=100)
    tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool = torch.nn.Identity()
    ours = model_mod.resnet34("standard").state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in tv.state_dict().items()}
    tv.load_state_dict(ours)
    m = model_mod.resnet34("standard").eval()
    m.load_state_dict(ours)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x), tv.eval()(x), atol=1e-5)


def rebuild(path):
    """What evaluate.py does with --checkpoint PATH: the network, in eval mode."""
    return load_model(load_checkpoint(path), evaluate.FACTORY, path, False,
                      evaluate.ARGS_OF_STATE)


def test_evaluate_rebuilds_the_variant_of_a_bare_state_dict(tmp_path):
    for variant in ("standard", "enhanced"):
        state = model_mod.resnet34(variant).state_dict()
        torch.save(state, tmp_path / f"{variant}.pt")
        assert evaluate.ARGS_OF_STATE(state) == {"variant": variant}
        assert len(rebuild(tmp_path / f"{variant}.pt").layer3) == (6 if variant == "standard"
                                                                   else 5)
    # the Enhanced ResNet34 project saves {"model_state_dict": ..., "optimizer_state_dict": ...}
    state = model_mod.resnet34("enhanced").state_dict()
    torch.save({"epoch": 5, "model_state_dict": state, "optimizer_state_dict": {},
                "test_accuracy": 1.0}, tmp_path / "best_model.pt")
    model = rebuild(tmp_path / "best_model.pt")
    assert len(model.layer1) == 5 and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.fixture
def sgdr_run(resnet34_run):
    """The session's run of the README's command for the "CIFAR-100 ResNet-34 Training
    Pipeline" notebook's recipe (conftest.py)."""
    return resnet34_run


def test_notebook_command_trains_the_standard_variant_with_restarts(sgdr_run):
    for name in ("last.pt", "epoch_1.pt", "epoch_2.pt", "metrics.npz", "metrics.csv",
                 "args.json", "training_curves.png"):
        assert (sgdr_run / name).is_file(), name
    ck = torch.load(sgdr_run / "last.pt", weights_only=True)
    assert ck["arch"] == "resnet34" and ck["model_args"]["variant"] == "standard"
    a = ck["args"]
    assert a["recipe"] == "sgdr-400-mixup-cutmix"  # also when the command names its old name
    # best.pt only where a split was named to choose it on; the test set never by default
    assert (sgdr_run / "best.pt").is_file() == bool(a["val_split"] or a["select_on_test"])
    assert (a["weight_decay"], a["mixup_alpha"], a["cutmix_alpha"], a["mix_prob"]) == (
        1e-3, 1, 1, 1)
    assert (a["nesterov"], a["clip_grad"], a["dropout"], a["holes_p"]) == (False, 0, 0, 0)
    lr = np.load(sgdr_run / "metrics.npz")["lr"]
    # the lr each epoch's step used. SGDR, T0 1 epoch, Tmult 2: cycle 1 = epoch 1 at the peak,
    # cycle 2 = epochs 2-3: back at the peak after the restart, then half-way down
    assert lr.tolist() == pytest.approx([0.1, 0.1, 0.05])


def test_default_recipe_builds_the_enhanced_variant():
    """The defaults are the Enhanced ResNet34 project's recipe (the notebook's command trains
    above, in the session). It stopped on reaching 75 % on the TEST set; that stop is not a
    default here (--select-on-test --target-acc 75 repeats it)."""
    train = load_module(REPO / "resnet34" / "train.py", "resnet34_train_defaults")
    args = train.parse_args([])
    model, model_args = train.build_model(args)
    assert model_args == {"variant": "enhanced", "num_classes": 100, "dropout": 0.3}
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [5, 5, 5, 5]
    a = vars(args)
    assert a["save_every"] == 5
    assert (a["nesterov"], a["lr"], a["pct_start"], a["final_div_factor"]) == (True, 0.1, 0.2, 1e3)
    assert (a["cutmix_alpha"], a["mix_prob"], a["clip_grad"], a["target_acc"]) == (1, 0.3, 1, 0)
    assert a["recipe"] == "onecycle-200-cutmix" and not a["select_on_test"]
    assert (a["holes_p"], a["noise_p"], a["affine_p"], a["seed"]) == (0.15, 0.15, 0.5, 1)


def test_evaluate_and_gradcam_rebuild_the_checkpoints_variant(sgdr_run, tmp_path):
    last = ("--checkpoint", sgdr_run / "last.pt", "--device", "cpu", "--test-subset", "100")
    ev, p = run_many(("resnet34/evaluate.py", *last, "--out-dir", tmp_path / "eval"),
                     ("resnet34/gradcam.py", *last, "--num", "2", "--pointing", "0",
                      "--out-dir", tmp_path / "cam"))
    assert ev.returncode == 0 and p.returncode == 0, ev.stderr + p.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["images"] == 100 and 0 <= report["top1"] <= report["top5"] <= 100
    assert "layer4.2" in p.stdout  # the standard variant's last block
    for name in ("gradcam_grid.png", "gradcam_2x3.png"):
        assert (tmp_path / "cam" / name).is_file(), name


def test_lr_suggestions_on_a_known_curve():
    lrs = np.geomspace(1e-5, 10, 120)
    x = np.log10(lrs)
    loss = 4.6 - np.tanh(2 * (x + 2)) + np.where(x > -0.5, 3 * (x + 0.5) ** 2, 0)
    steepest, min10 = lr_find.suggest(lrs, loss.tolist())
    assert steepest == pytest.approx(1e-2, rel=0.15)   # where tanh falls fastest
    assert min10 == pytest.approx(lrs[np.argmin(loss)] / 10)
    flat_then_up = 4.6 + np.maximum(x, 0)  # never falls: no steepest descent, min/10 remains
    assert lr_find.suggest(lrs, flat_then_up.tolist())[0] is None


def test_centred_average_does_not_lag():
    trend = np.linspace(5.0, 4.0, 40)
    smooth = lr_find.centred_average(trend, 7)
    assert np.allclose(smooth[3:-3], trend[3:-3])  # an EMA would sit 1/(1-beta) steps behind
    assert lr_find.centred_average([1.0, 3.0, 2.0], 3).tolist() == [2.0, 2.0, 2.5]


def tiny_model(variant="enhanced", num_classes=100, dropout=0.0):
    """Stands in for the 21-30 M parameter ResNet-34 where a test is about the script around it."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, num_classes))


def test_lr_find_stops_on_divergence_and_writes_its_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(lr_find, "resnet34", tiny_model)
    args = lr_find.build_parser().parse_args([*TINY, "--subset", "200", "--batch-size", "20",
                                              "--steps", "80", "--end-lr", "100",
                                              "--out-dir", str(tmp_path)])
    result = lr_find.main(args)
    assert result["diverged"] and result["steps_run"] < 80  # lr 100 blows any model up
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert len(saved["lr"]) == len(saved["smoothed_loss"]) == saved["steps_run"]
    assert saved["lr"][0] == pytest.approx(1e-5) and np.all(np.diff(saved["lr"]) > 0)
    assert saved["suggested_lr"] is None or 1e-5 <= saved["suggested_lr"] <= 100
    assert (tmp_path / "lr_find.png").stat().st_size > 10_000


@pytest.mark.slow
def test_sweep_overlays_runs_and_tabulates_them(tmp_path, capsys):
    """Each grid point is a train.py process (the standard variant, to keep it quick); the runs
    are ranked on their validation split, and the test set stays small as the training set."""
    assert sweep.build_parser().parse_known_args(["--lr", "1"])[1] == ["--lr", "1"]  # train's
    argv = [*TINY, "--variant", "standard", "--subset", "60", "--val-split", "10",
            "--test-subset", "100", "--batch-size", "25", "--epochs", "2", "--lrs", "0.01",
            "0.1", "--weight-decays", "5e-4", "--out-dir", str(tmp_path)]
    rows = sweep.main(argv)
    assert [(r["lr"], r["status"], r["epochs"]) for r in rows] == [(0.01, "done", 2),
                                                                   (0.1, "done", 2)]
    assert all(r["val_top1"] is not None and r["best_epoch"] in (1, 2) for r in rows)
    saved = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert [r["test_top1"] for r in saved] == [r["test_top1"] for r in rows]
    run_args = json.loads((tmp_path / "lr0.01_wd0.0005" / "args.json").read_text())
    assert (run_args["subset"], run_args["val_split"], run_args["test_subset"]) == (60, 10, 100)
    assert (tmp_path / "lr0.01_wd0.0005" / "last.pt").is_file()
    assert (tmp_path / "lr0.01_wd0.0005" / "best.pt").is_file()  # chosen on the val split
    assert (tmp_path / "sweep.png").is_file()
    md = (tmp_path / "sweep.md").read_text()
    assert "| 0.1 | 0.0005 | 2 |" in md and "best by final validation top-1: lr " in md
    capsys.readouterr()
    sweep.main(argv)  # a second call retrains nothing
    assert capsys.readouterr().out.count("reusing the finished run") == 2


def test_output_size_formula_matches_conv2d():
    x = {n: torch.zeros(1, 1, n, n) for n in (5, 8, 32)}
    checked = 0
    for n in x:
        for k in (1, 2, 3, 5, 7):
            for s in (1, 2, 3):
                for p in (0, 1, 3):
                    for d in (1, 2, 4):
                        want = conv.out_size(n, k, s, p, d)
                        w = torch.zeros(1, 1, k, k)
                        if want <= 0:
                            with pytest.raises(RuntimeError):
                                F.conv2d(x[n], w, stride=s, padding=p, dilation=d)
                            continue
                        got = F.conv2d(x[n], w, stride=s, padding=p, dilation=d).shape[-1]
                        assert got == want, (n, k, s, p, d)
                        checked += 1
    assert checked > 300


def test_hand_made_kernels_for_any_odd_size():
    for k in (1, 3, 5, 9):
        assert conv.make_kernel("blur", k).sum() == pytest.approx(1)
        assert conv.make_kernel("edge", k).sum() == pytest.approx(0, abs=1e-6)
        assert conv.make_kernel("sharpen", k).sum() == pytest.approx(1)
        assert conv.make_kernel("random", k, seed=1).shape == (k, k)
    assert conv.make_kernel("emboss", 3).tolist() == [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]
    assert torch.allclose(9 * conv.make_kernel("edge", 3),
                          torch.tensor([[-1., -1, -1], [-1, 8, -1], [-1, -1, -1]]))
    with pytest.raises(ValueError, match="odd"):
        conv.make_kernel("edge", 4)


def test_conv_explorer_figure_from_a_dataset_image_and_a_checkpoint_filter(sgdr_run, tmp_path):
    small = ("--dataset", "synthetic", "--test-subset", "100")
    p = run("resnet34/conv_explorer.py", *small, "--index", "3", "--kernel", "emboss",
            "--out-dir", tmp_path / "a")
    sizes = re.findall(r"= (\d+) \(x \d+\), conv2d gave (\d+)x", p.stdout)
    assert len(sizes) == 6 and all(a == b for a, b in sizes)
    assert (tmp_path / "a" / "conv_explorer.png").is_file()
    p = run("resnet34/conv_explorer.py", *small, "--kernel", "first-layer",
            "--checkpoint", sgdr_run / "last.pt", "--filter", "63", "--strides", "1", "2",
            "--paddings", "1", "--dilations", "1", "--out-dir", tmp_path / "b")
    assert "conv2d gave 32x32" in p.stdout and "conv2d gave 16x16" in p.stdout
    assert (tmp_path / "b" / "conv_explorer.png").is_file()


def test_bad_input_gets_one_line_errors(sgdr_run, tmp_path):
    small = ("--dataset", "synthetic", "--test-subset", "100")
    cases = [("resnet34/conv_explorer.py", *small, "--index", "100"),
             ("resnet34/conv_explorer.py", *small, "--kernel-sizes", "3", "5",
              "--strides", "1", "2", "3"),
             ("resnet34/conv_explorer.py", *small, "--kernel", "first-layer",
              "--checkpoint", sgdr_run / "last.pt", "--filter", "64"),
             ("resnet34/lr_find.py", *TINY, "--start-lr", "1", "--end-lr", "0.1"),
             ("resnet34/sweep.py", *TINY, "--lrs", "-1")]
    for (script, *args), p in zip(cases, run_many(*[(*c, "--out-dir", tmp_path) for c in cases])):
        assert p.returncode != 0 and "Traceback" not in p.stderr, (args, p.stderr)
        assert p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1
