"""Grad-CAM, the calibration / per-class figures, the plots, and the two analysis scripts."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import REPO, load_module

sys.path.insert(0, str(REPO))
from common import plots  # noqa: E402
from common.gradcam import GradCAM, find_layer, overlay, pointing_game  # noqa: E402
from common.metrics import save_figure  # noqa: E402
from common.report import calibration, per_class_report  # noqa: E402


class Tiny(nn.Module):
    """features -> global mean -> dropout -> fc, so Grad-CAM has a closed form at `features`."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.drop(self.features(x).mean((2, 3))))


def no_hooks(m):
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or m._backward_pre_hooks)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Tiny(), torch.randn(4, 3, 16, 16)


def test_gradcam_maps_in_unit_range_and_hooks_removed(tiny):
    model, x = tiny
    model.train()
    bn = model.features[1]
    before = bn.running_mean.clone()
    with GradCAM(model, "features") as cam:
        maps, logits = cam(x)
    assert maps.shape == (4, 16, 16) and logits.shape == (4, 5)
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(math.isclose(float(m.max()), 1.0, abs_tol=1e-6) for m in maps)
    assert all(no_hooks(m) for m in model.modules())
    assert all(m.training for m in model.modules())           # train mode given back
    assert torch.equal(bn.running_mean, before)               # the maps ran in eval mode


def test_gradcam_matches_the_closed_form(tiny):
    # logit_c = W_c . mean(A) + b, so d logit_c / dA_k = W_ck / (h*w): the map is ReLU(W_c . A)
    model, x = tiny
    model.eval()
    with GradCAM(model, model.features) as cam:
        maps, _ = cam(x, target=2)
    raw = F.relu(torch.einsum("k,bkhw->bhw", model.fc.weight[2], model.features(x)))
    up = F.interpolate(raw[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    torch.testing.assert_close(maps, (up - lo) / (hi - lo), atol=1e-5, rtol=1e-4)


def test_gradcam_with_frozen_parameters_leaves_no_grads(tiny):
    model, x = tiny
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():  # even from inside no_grad, as in an evaluation loop
        with GradCAM(model, "features.3") as cam:
            maps, _ = cam(x, target=torch.tensor([0, 1, 2, 3]))
    assert maps.shape == (4, 16, 16) and torch.isfinite(maps).all() and maps.max() > 0
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_flat_map_is_zero_not_nan(tiny):
    model, x = tiny
    with torch.no_grad():
        model.fc.weight[0] = -1.0  # post-ReLU activations >= 0: the class-0 map is all negative
    with GradCAM(model, "features") as cam:
        maps, _ = cam(x, target=0)
    assert torch.equal(maps, torch.zeros_like(maps))


def test_gradcam_hook_removed_after_error_and_close(tiny):
    model, x = tiny
    with pytest.raises(RuntimeError):
        with GradCAM(model, "features") as cam:
            cam(torch.randn(2, 5, 16, 16))  # wrong channel count
    assert no_hooks(model.features)
    cam = GradCAM(model, "features.4")
    cam.close()
    assert no_hooks(model.features[4])


def test_gradcam_on_resnet18_and_find_layer():
    model = load_module(REPO / "resnet18/model.py", "r18_model_analysis").resnet18()
    for p in model.parameters():
        p.requires_grad_(False)
    assert find_layer(model, "layer4.1") is model.layer4[1]
    assert find_layer(model, "layer4[-1]") is model.layer4[1]
    assert find_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    assert find_layer(model, "layer4[-1].conv2") is model.layer4[1].conv2
    with GradCAM(model, "layer4[-1]") as cam:
        maps, logits = cam(torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32) and logits.shape == (2, 100)
    assert no_hooks(model.layer4[1])
    with pytest.raises(ValueError, match=r"layer9.*conv1, bn1, layer1.*layer4.*fc") as e:
        find_layer(model, "layer9")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"'layer4' has no '5'; it has: 0, 1"):
        find_layer(model, "layer4[5]")


def test_overlay_is_an_rgb_image():
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = overlay(img, torch.rand(32, 32))
    assert out.shape == (32, 32, 3) and out.min() >= 0 and out.max() <= 1


def test_calibration_on_a_hand_example():
    conf = torch.tensor([0.95, 0.95, 0.55, 0.55, 0.15, 1.0])
    correct = torch.tensor([1, 0, 1, 1, 0, 1])
    ece, bin_conf, bin_acc, count = calibration(conf, correct, bins=10)
    # bins 9: (.95, .95, 1.0) acc 2/3; 5: (.55, .55) acc 1; 1: (.15) acc 0
    assert count.tolist() == [0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
    assert bin_acc[9] == pytest.approx(2 / 3) and bin_conf[5] == pytest.approx(0.55)
    assert math.isnan(bin_acc[0]) and math.isnan(bin_conf[0])
    gaps = 3 * abs(2.9 / 3 - 2 / 3) + 2 * 0.45 + 1 * 0.15
    assert ece == pytest.approx(gaps / 6)


def test_per_class_report_on_a_hand_example():
    cm = torch.tensor([[2, 1, 0], [0, 3, 0], [0, 0, 0]])  # rows true, columns predicted
    r = per_class_report(cm)
    torch.testing.assert_close(r["precision"], torch.tensor([1.0, 0.75, 0.0], dtype=torch.float64))
    torch.testing.assert_close(r["recall"], torch.tensor([2 / 3, 1.0, 0.0], dtype=torch.float64))
    assert r["f1"][0] == pytest.approx(0.8) and r["f1"][1] == pytest.approx(6 / 7)
    assert r["macro_recall"] == pytest.approx((2 / 3 + 1) / 3)
    assert r["weighted_recall"] == pytest.approx(5 / 6)  # = accuracy
    assert r["weighted_precision"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.75)


def png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_plots_write_pngs(tmp_path):
    ep = np.arange(1, 6, dtype=float)
    nan = np.full(5, np.nan)
    m = {"epoch": ep, "lr": ep / 10, "train_loss": 5 - ep, "train_acc": 10 * ep, "val_loss": nan,
         "val_top1": nan, "test_loss": 5 - ep / 2, "test_top1": 9 * ep}
    for folder in ("resnet18", "resnet34", "se_res_inception"):  # each folder's own figure
        curves = load_module(REPO / folder / "curves.py", f"{folder}_curves_analysis")
        save_figure(curves.plot_curves(m, best_epoch=4), tmp_path / f"{folder}.png")
        save_figure(curves.plot_curves(m), tmp_path / f"{folder}_no_best.png")
    rng = np.random.default_rng(0)
    cm = rng.random((100, 100))
    save_figure(plots.confusion_heatmap(cm / cm.sum(1, keepdims=True),
                                        [f"class_{i}" for i in range(100)], "100 classes"),
                tmp_path / "cm100.png")
    save_figure(plots.confusion_heatmap(np.eye(20) * 0.7 + 0.015,
                                        [f"super_{i}" for i in range(20)], "20 superclasses",
                                        annotate=True), tmp_path / "cm20.png")
    conf = np.array([np.nan, 0.2, 0.5, 0.9])
    save_figure(plots.reliability_diagram(conf, [np.nan, 0.1, 0.6, 0.8], [0, 5, 10, 20], 0.07),
                tmp_path / "rel.png")
    imgs = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    save_figure(plots.image_grid(imgs, ["sweet_pepper (97%) / aquarium_fish"] * 5, ncols=4,
                                 colors=[plots.GOOD, plots.BAD] * 2 + [plots.GOOD], suptitle="s"),
                tmp_path / "grid.png")
    save_figure(plots.image_grid([imgs[0], None, overlay(imgs[1], torch.rand(32, 32))],
                                 ["a", "", "b"], ncols=3), tmp_path / "mixed.png")
    save_figure(plots.image_grid(imgs[:0], [], suptitle="No mistakes"), tmp_path / "empty.png")
    names = {"resnet18", "resnet34", "se_res_inception", "cm100", "cm20", "rel", "grid",
             "mixed", "empty"} | {f"{f}_no_best" for f in ("resnet18", "resnet34",
                                                          "se_res_inception")}
    assert {p.stem for p in tmp_path.iterdir()} == names  # no temporary files left
    w, h = png_size(tmp_path / "cm100.png")
    assert w >= 1500 and h >= 1500  # 100 tick labels need a large canvas
    w, h = png_size(tmp_path / "grid.png")
    assert w >= 4 * 150  # each 32-px image shown at 150+ px


def test_plots_import_no_pyplot():
    code = ("import common.plots, common.metrics, sys; sys.path.insert(0, 'resnet18'); "
            "import curves; assert 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_pointing_game_counts_peaks_on_the_object():
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, 2:4, 2:4] = True  # a 2x2 object: 1/16 of each image
    maps = torch.zeros(4, 8, 8)
    maps[0, 3, 3] = maps[1, 2, 2] = 1.0  # on the object
    maps[2, 6, 6] = 1.0  # beside it; map 3 blank: no peak, a miss
    score = pointing_game(maps, masks, torch.tensor([True, False, True, True]))
    assert score == pytest.approx({"hit": 50.0, "hit_correct": 100 / 3, "chance": 6.25,
                                   "images": 4})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained ResNet-18 in the train.py checkpoint format, on a 100-image synthetic test."""
    model = load_module(REPO / "resnet18/model.py", "r18_model_ckpt").resnet18()
    path = tmp_path_factory.mktemp("run") / "last.pt"
    torch.save({"arch": "resnet18", "model_args": {"num_classes": 100, "dropout": 0.3},
                "num_classes": 100, "dataset": "synthetic", "epoch": 1,
                "model": model.state_dict(), "ema": None,
                "args": {"dataset": "synthetic", "data_dir": None, "subset": 500,
                         "test_subset": 100, "val_split": 0}},
               path)
    return path


def test_evaluate_main_report_and_refusals(checkpoint, tmp_path):
    """In-process (the CLI runs are in test_resnet18.py): figures agree, bad input is one line."""
    ev = load_module(REPO / "resnet18/evaluate.py", "r18_evaluate_analysis")
    r = ev.main(ev.build_parser().parse_args(["--checkpoint", str(checkpoint), "--device", "cpu",
                                              "--out-dir", str(tmp_path)]))
    assert r["images"] == 100 and len(r["per_class_recall"]) == 100
    assert 100 * r["weighted_recall"] == pytest.approx(r["top1"])  # support-weighted = accuracy
    assert sum(r["calibration_bins"]["count"]) == 100
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(r))
    for f in ("confusion_matrix", "superclass_confusion", "reliability", "samples",
              "confident_mistakes"):
        assert png_size(tmp_path / f"{f}.png")[0] > 300
    ck = torch.load(checkpoint, weights_only=True)
    ck["arch"] = "resnet34"
    torch.save(ck, tmp_path / "r34.pt")
    for argv, message in ((["--checkpoint", str(tmp_path / "r34.pt")], "'resnet34' model"),
                          (["--checkpoint", str(checkpoint), "--ema"], "no EMA weights"),
                          (["--checkpoint", str(tmp_path / "none.pt")], "no checkpoint at")):
        with pytest.raises(SystemExit, match=f"^error: .*{message}") as e:
            ev.main(ev.build_parser().parse_args([*argv, "--device", "cpu"]))
        assert "\n" not in str(e.value)
