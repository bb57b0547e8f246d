"""se_res_inception/: the architecture against its table, SE / DropPath / branches, the official
fine -> coarse map, superclass accuracy by hand, and every script end to end on synthetic data."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "se_res_inception"
sys.path.insert(0, str(ROOT))
from common.data import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE, class_names  # noqa: E402
from common.report import superclass_accuracy  # noqa: E402
from conftest import run_many  # noqa: E402


def load(name):
    """Import se_res_inception/<name>.py by path. Its `from model import` must find this
    folder's model.py, not another folder's already in sys.modules."""
    local = ("model",)
    saved = {k: sys.modules.pop(k) for k in local if k in sys.modules}
    sys.path.insert(0, str(FOLDER))
    try:
        spec = importlib.util.spec_from_file_location(f"se_res_inception_{name}",
                                                      FOLDER / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(FOLDER))
        for k in local:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return mod


M = load("model")

# (output shape after the module, GoogLeNet's (#1x1, #3x3red, #3x3, #5x5red, #5x5, pool proj))
TABLE = {
    "inception1": ((256, 32, 32), (64, 96, 128, 16, 32, 32)),
    "inception2": ((480, 32, 32), (128, 128, 192, 32, 96, 64)),
    "maxpool1": ((480, 16, 16), None),
    "inception3": ((512, 16, 16), (192, 96, 208, 16, 48, 64)),
    "inception4": ((512, 16, 16), (160, 112, 224, 24, 64, 64)),
    "inception5": ((528, 16, 16), (112, 144, 288, 32, 64, 64)),
    "inception6": ((832, 16, 16), (256, 160, 320, 32, 128, 128)),
    "inception7": ((832, 16, 16), (256, 160, 320, 32, 128, 128)),
    "maxpool2": ((832, 8, 8), None),
    "inception8": ((832, 8, 8), (256, 160, 320, 32, 128, 128)),
    "inception9": ((1024, 8, 8), (384, 192, 384, 48, 128, 128)),
}


def test_shape_after_every_block_matches_the_table():
    model = M.se_res_inception().eval()
    shapes = {}
    for name in TABLE:
        getattr(model, name).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    assert list(shapes) == list(TABLE)  # also the order the forward pass runs them in
    for name, (shape, widths) in TABLE.items():
        assert shapes[name] == shape, name
        if widths:
            block = getattr(model, name)
            n1, _, n3, _, n5, npool = widths
            outs = [b.out_channels for b in (block.branch1, block.branch3, block.branch5,
                                             block.branch_pool)]
            assert outs == [n1, n3, n5, npool], name
            convs = [m for m in block.branch3.modules() if isinstance(m, nn.Conv2d)]
            assert [c.out_channels for c in convs] == [widths[1], n3], name  # reduce, then 3x3
    assert sum(p.numel() for p in model.parameters()) == 8_955_631
    assert model.fc.in_features == 1024 and model.dropout.p == 0.5


def test_shortcuts_drop_path_schedule_and_init():
    model = M.se_res_inception(dropout=0.4, block_dropout=0.1, drop_path=0.2)
    blocks = [getattr(model, f"inception{i}") for i in range(1, 10)]
    projected = [not isinstance(b.shortcut, nn.Identity) for b in blocks]
    # channels change 64->256->480->512, 512->528->832, 832->1024; stay at 512->512, 832->832 (x2)
    assert projected == [True, True, True, False, True, True, False, False, True]
    assert torch.allclose(torch.tensor([b.drop_path.p for b in blocks]),
                          torch.linspace(0, 0.2, 9))
    assert all(b.dropout.p == 0.1 for b in blocks) and model.dropout.p == 0.4
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    w = blocks[8].branch3.body[3].weight.detach()  # 3x3 conv, 192 -> 384: std sqrt(2 / fan_out)
    assert abs(float(w.std()) - (2 / (384 * 9)) ** 0.5) < 0.002
    assert abs(float(model.fc.weight.detach().std()) - 0.01) < 0.001 and not model.fc.bias.any()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)


def test_se_block_gates_each_channel():
    torch.manual_seed(0)
    assert M.SEBlock(32).fc[0].out_features == 8      # max(32 // 16, 8)
    assert M.SEBlock(1024).fc[0].out_features == 64   # 1024 // 16
    se = M.SEBlock(64)
    x = torch.randn(3, 64, 5, 5)
    fc1, fc2 = se.fc[0], se.fc[2]
    gate = torch.sigmoid(fc2(F.relu(fc1(x.mean((2, 3))))))  # (3, 64)
    assert torch.allclose(se(x), x * gate[:, :, None, None], atol=1e-6)
    assert ((gate > 0) & (gate < 1)).all()


def test_drop_path_is_identity_in_eval_and_keeps_the_mean_in_training():
    x = torch.randn(4, 8, 3, 3)
    dp = M.DropPath(0.3)
    assert torch.equal(dp.eval()(x), x)
    assert torch.equal(M.DropPath(0.0).train()(x), x)
    torch.manual_seed(0)
    ones = torch.ones(40_000, 2, 2, 2)
    out = dp.train()(ones)
    per_sample = out.flatten(1)
    assert (per_sample == per_sample[:, :1]).all()  # one decision per sample
    kept = per_sample[:, 0] != 0
    assert torch.allclose(per_sample[kept, 0], torch.tensor(1 / 0.7))  # survivors scaled 1/keep
    assert abs(float(kept.float().mean()) - 0.7) < 0.01
    assert abs(float(out.mean()) - 1.0) < 0.015


@pytest.mark.parametrize("kind, reduce, convs", [("1x1", None, [1]), ("3x3", 6, [1, 3]),
                                                 ("5x5", 6, [1, 5]), ("pool", None, [1])])
def test_each_branch_keeps_the_size_and_has_its_width(kind, reduce, convs):
    branch = M.InceptionBranch(kind, 16, 12, reduce)
    assert branch(torch.randn(2, 16, 9, 9)).shape == (2, 12, 9, 9)
    layers = list(branch.body)
    conv_layers = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in conv_layers] == convs
    for c in conv_layers:  # bias-free, BatchNorm right after
        assert c.bias is None and isinstance(layers[layers.index(c) + 1], nn.BatchNorm2d)
    assert isinstance(layers[0], nn.MaxPool2d) == (kind == "pool")


def test_unknown_branch_type_raises():
    with pytest.raises(ValueError, match="7x7"):
        M.InceptionBranch("7x7", 16, 12, 6)


def test_res_inception_block_adds_the_projected_input():
    torch.manual_seed(0)
    block = M.ResInceptionBlock(16, (8, 4, 8, 4, 8, 8), block_dropout=0.0).eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        y = block(x)
        branches = torch.cat([block.branch1(x), block.branch3(x), block.branch5(x),
                              block.branch_pool(x)], 1)
        want = F.relu(block.se(branches) + block.shortcut(x))
    assert y.shape == (2, 32, 6, 6) and torch.allclose(y, want, atol=1e-6)
    same = M.ResInceptionBlock(32, (8, 4, 8, 4, 8, 8))
    assert isinstance(same.shortcut, nn.Identity)


# The CIFAR-100 page (cs.toronto.edu/~kriz/cifar.html) lists the superclasses with their 5 fine
# classes in plain words; here they are written with the label names of cifar-100-python/meta.
OFFICIAL = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


def test_fine_to_coarse_is_the_official_map():
    assert list(OFFICIAL) == list(COARSE_NAMES)
    assert sorted(n for v in OFFICIAL.values() for n in v.split()) == sorted(FINE_NAMES)
    counts = torch.bincount(torch.tensor(FINE_TO_COARSE), minlength=20)
    assert counts.tolist() == [5] * 20
    for coarse, members in OFFICIAL.items():
        got = sorted(FINE_NAMES[f] for f, c in enumerate(FINE_TO_COARSE)
                     if COARSE_NAMES[c] == coarse)
        assert got == members.split(), coarse


def test_superclass_accuracy_by_hand():
    ev = load("evaluate_superclass")
    f = FINE_NAMES.index
    # true: maple_tree, bee, bus, whale, baby; predicted: oak_tree (same superclass: trees),
    # bee (right), tank (vehicles_2, not vehicles_1), dolphin (aquatic_mammals), lion (wrong)
    y = torch.tensor([f("maple_tree"), f("bee"), f("bus"), f("whale"), f("baby")])
    pred = torch.tensor([f("oak_tree"), f("bee"), f("tank"), f("dolphin"), f("lion")])
    assert superclass_accuracy(pred, y, FINE_TO_COARSE) == pytest.approx(60.0)  # 3 of 5
    assert superclass_accuracy(y, y, FINE_TO_COARSE) == 100.0
    # summed probabilities: the top fine class is "lion" (0.3) but the 5 people share 0.5
    probs = torch.zeros(1, 100)
    probs[0, f("lion")] = 0.3
    for name in ("baby", "boy", "girl", "man", "woman"):
        probs[0, f(name)] = 0.1
    probs[0, f("bee")] = 0.2
    coarse = ev.summed_superclass(probs)
    assert coarse.shape == (1, 20) and torch.allclose(coarse.sum(1), torch.ones(1))
    assert COARSE_NAMES[int(coarse.argmax())] == "people"
    assert coarse[0, COARSE_NAMES.index("people")] == pytest.approx(0.5)


def test_gradcam_finds_the_last_inception_block():
    gc = load("gradcam")
    # the factory of the model module gradcam.py imported: isinstance needs that very class
    factory = gc.ResInceptionBlock.__init__.__globals__["se_res_inception"]
    assert gc.auto_layer(factory()) == "inception9"
    plain = nn.Sequential()
    for name, m in (("conv", nn.Conv2d(3, 4, 3)), ("features", nn.Conv2d(4, 4, 3)),
                    ("pool", nn.AdaptiveAvgPool2d(1)), ("fc", nn.Flatten())):
        plain.add_module(name, m)
    assert gc.auto_layer(plain) == "pool"  # the source project's fallback: the next-to-last module


# The full network costs 2 GMACs per image (a few img/s on a 2-core CPU), so the CLI runs below
# use every script unchanged on a network 1/16 as wide with an 8-channel stem: the shim shrinks
# model.WIDTHS and model.STEM before the scripts import the module, then runs each script as
# __main__ with its command line, one after the other in one interpreter (torch imports once);
# every script rebuilds the same narrow network from the checkpoint's model_args.
SHIM = """import runpy, sys
sys.path.insert(0, {folder!r})
import model
model.WIDTHS = tuple(tuple(max(2, w // 16) for w in ws) for ws in model.WIDTHS)
model.STEM = 8
for script, args in {commands!r}:
    sys.argv = [script] + args
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
"""


def run_narrow(*commands):
    """Run (script, arg, ...) commands in one interpreter on the narrow network -> the output."""
    commands = [(str(FOLDER / c[0]), [str(a) for a in c[1:]]) for c in commands]
    p = subprocess.run([sys.executable, "-c", SHIM.format(folder=str(FOLDER), commands=commands)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout + p.stderr


def run(script, *args, ok=True):
    """`python se_res_inception/<script> args` from the repo root, as a user types it."""
    p = subprocess.run([sys.executable, str(FOLDER / script), *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert (p.returncode == 0) == ok, p.stdout + p.stderr
    return p.stdout + p.stderr


def test_cli_train_evaluate_superclass_gradcam_plot(tmp_path):
    out = tmp_path / "run"
    log = run_narrow(("train.py", "--dataset", "synthetic", "--subset", 120, "--val-split", 20,
                      "--test-subset", 100, "--batch-size", 50, "--epochs", 1, "--device", "cpu",
                      "--progress-every", 1000, "--out-dir", out))
    assert "done:" in log
    for f in ("last.pt", "best.pt", "metrics.npz", "metrics.csv", "args.json",
              "training_curves.png"):  # best.pt: chosen on the 20 held-out images
        assert (out / f).is_file(), f
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["arch"] == "se_res_inception"
    assert ckpt["model_args"] == {"num_classes": 100, "dropout": 0.4, "block_dropout": 0.2,
                                  "drop_path": 0.2}  # the source project's Config, model defaults
    args = json.loads((out / "args.json").read_text())
    assert (args["optimizer"], args["lr"], args["weight_decay"], args["scheduler"]) == (
        "adamw", 1e-3, 5e-4, "cosine")
    assert (args["mix_prob"], args["switch_prob"], args["label_smoothing"]) == (0.5, 0.5, 0.1)
    assert args["mixup_alpha"] > 0 and args["cutmix_alpha"] > 0
    assert (args["rotate"], args["erase_p"], args["jitter"]) == (0.0, 0.0, [0.0] * 4)
    torch.save(ckpt["model"], tmp_path / "bare.pt")  # a bare state dict: default factory args

    last = ("--checkpoint", out / "last.pt", "--device", "cpu")  # its 100 test images
    log = run_narrow(("evaluate.py", *last),
                     ("evaluate_superclass.py", *last),
                     ("evaluate_superclass.py", "--checkpoint", tmp_path / "bare.pt",
                      "--dataset", "synthetic", "--test-subset", 100, "--device", "cpu",
                      "--out-dir", tmp_path / "bare"),
                     ("gradcam.py", *last, "--num", 4, "--pointing", 0),
                     ("env_val.py", "--skip-compile", "--device", "cpu"))
    report = json.loads((out / "eval" / "report.json").read_text())
    assert "superclass top-1" in log
    sc = json.loads((out / "superclass" / "superclass.json").read_text())
    assert (out / "superclass" / "superclass_confusion.png").is_file()
    assert sc["fine_top1"] == pytest.approx(report["top1"])  # the same predictions
    assert sc["superclass_top1"] >= sc["fine_top1"]
    assert sc["superclass_names"] == class_names("synthetic")[1]  # "h-stripes 5px", ...
    assert len(sc["confusion_row_normalized"]) == 20
    rows = torch.tensor(sc["confusion_counts"]).sum(1)
    assert int(rows.sum()) == sc["images"] == 100
    bare = json.loads((tmp_path / "bare" / "superclass.json").read_text())
    assert bare["images"] == 100  # scored, with CIFAR-100's normalization: a bare state dict
    # stores none, where the run's checkpoint keeps its training images' own mean and std
    assert "Grad-CAM at inception9" in log and (out / "gradcam" / "gradcam_grid.png").is_file()
    assert "fp32            works" in log and "verdict: CPU only" in log  # env_val.py

    (out / "training_curves.png").unlink()
    log = run("plot_metrics.py", "--run-dir", out)
    assert "1 epochs" in log and (out / "training_curves.png").is_file()
    assert "best.pt: epoch 1, chosen on val top-1" in log


def test_cli_errors_are_one_line(tmp_path):
    results = run_many(
        (FOLDER / "plot_metrics.py", "--run-dir", tmp_path),
        (FOLDER / "evaluate_superclass.py", "--checkpoint", tmp_path / "none.pt"),
        (FOLDER / "train.py", "--dataset", "synthetic", "--subset", 100, "--batch-size", 50,
         "--drop-path", 1.5, "--device", "cpu", "--out-dir", tmp_path / "run"))
    wants = ["error: no metrics.npz", "error: no checkpoint",
             "error: argument --drop-path: 1.5 is outside [0, 1)"]
    for want, r in zip(wants, results):
        assert r.returncode != 0 and want in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_model_summary(capsys):
    """What `python se_res_inception/model.py` prints: the source project's get_model_summary()."""
    n, macs = M.get_model_summary()
    log = capsys.readouterr().out
    assert n == 8_955_631 and 1.9e9 < macs < 2.1e9
    assert "8,955,631 parameters" in log and "(1024, 8, 8)" in log and "-> ok" in log
