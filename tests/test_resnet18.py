"""resnet18/: the model, and the train -> evaluate -> gradcam story from the command line."""
import json
import shutil
import signal
import sys

import pytest
import torch
import torchvision

from conftest import REPO, SMALL, interrupt_in_epoch_2, load_module, run, run_many

model_mod = load_module(REPO / "resnet18" / "model.py", "resnet18_model")


def test_shapes_and_parameter_count():
    m = model_mod.resnet18()
    assert sum(p.numel() for p in m.parameters()) == 11_220_132
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_state_dict_matches_adapted_torchvision():
    tv = torchvision.models.resnet18(num_classes=100)
    tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool = torch.nn.Identity()
    ours = model_mod.resnet18().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in tv.state_dict().items()}
    tv.load_state_dict(ours)  # and the weights carry over: same function
    m = model_mod.resnet18().eval()
    m.load_state_dict(ours)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x), tv.eval()(x), atol=1e-5)


@pytest.fixture
def trained(resnet18_run):
    """The session's tiny run (conftest.py): 2 epochs on 200 synthetic images, with EMA."""
    return resnet18_run


def test_train_writes_the_run_dir(trained):
    for name in ("last.pt", "best.pt", "metrics.npz", "metrics.csv", "args.json",
                 "training_curves.png"):
        assert (trained / name).is_file(), name
    ck = torch.load(trained / "last.pt", weights_only=True)
    assert ck["arch"] == "resnet18" and ck["epoch"] == 2 and ck["best"]["split"] == "val"
    args = json.loads((trained / "args.json").read_text())
    assert args["subset"] == 200 and args["data_dir"] is None  # as given: none
    import numpy as np
    with np.load(trained / "metrics.npz", allow_pickle=False) as m:
        assert m["epoch"].tolist() == [1, 2]
        assert all(np.isfinite(m[k]).all() for k in m.files), "a column with gaps"
        assert {"val_top1", "ema_test_top1", "save_time", "time"} <= set(m.files)


def test_training_and_evaluate_py_report_one_number_for_last_pt(trained, tmp_path):
    """The test top-1 that training printed for its last epoch is what evaluate.py reports for
    last.pt: the same 100 images (the run's --test-subset, drawn the same way), float32."""
    import numpy as np
    with np.load(trained / "metrics.npz", allow_pickle=False) as m:
        logged = {k: float(m[f"test_{k}"][-1]) for k in ("top1", "top5", "loss")}
    run("resnet18/evaluate.py", "--checkpoint", trained / "last.pt", "--device", "cpu",
        "--out-dir", tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images"] == 100
    assert (report["top1"], report["top5"]) == (logged["top1"], logged["top5"])
    assert report["loss"] == pytest.approx(logged["loss"], rel=1e-4)


def test_evaluate_and_gradcam_write_every_promised_file(trained, tmp_path):
    p, *cams = run_many(("resnet18/evaluate.py", "--checkpoint", trained / "best.pt", "--device",
                         "cpu", "--tta", "--out-dir", tmp_path / "eval"),
                        ("resnet18/gradcam.py", "--checkpoint", trained / "best.pt", "--device",
                         "cpu", "--pointing", "50", "--out-dir", tmp_path / "cam"),
                        ("resnet18/gradcam.py", "--checkpoint", trained / "best.pt", "--device",
                         "cpu", "--per-class", "--pointing", "0", "--out-dir", tmp_path / "cam2"))
    assert [r.returncode for r in (p, *cams)] == [0, 0, 0], [r.stderr for r in (p, *cams)]
    assert "top-1" in p.stdout.lower() or "top1" in p.stdout.lower()
    for name in ("report.json", "confusion_matrix.png", "reliability.png", "samples.png",
                 "confident_mistakes.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert 0 <= report["top1"] <= report["top5"] <= 100
    assert (tmp_path / "cam" / "gradcam_grid.png").is_file()
    assert (tmp_path / "cam2" / "gradcam_per_class.png").is_file()
    score = json.loads((tmp_path / "cam" / "pointing_game.json").read_text())
    assert score["images"] == 50 and 10 < score["chance"] < 40  # the objects' share
    assert "pointing game" in cams[0].stdout
    assert not (tmp_path / "cam2" / "pointing_game.json").exists()


def test_single_image_demo(trained, tmp_path):
    from PIL import Image
    Image.fromarray(torch.randint(0, 256, (64, 48, 3), dtype=torch.uint8).numpy()).save(
        tmp_path / "x.png")
    (tmp_path / "bad.png").write_text("not an image")
    good, p = run_many(*[("resnet18/evaluate.py", "--checkpoint", trained / "best.pt",
                          "--device", "cpu", "--image", tmp_path / name)
                         for name in ("x.png", "bad.png")])
    lines = [ln for ln in good.stdout.splitlines() if "%" in ln]
    assert good.returncode == 0 and len(lines) >= 5, good.stderr
    assert p.returncode != 0 and p.stderr.strip().startswith("error:")
    assert len(p.stderr.strip().splitlines()) == 1


def test_resume_after_ctrl_c_is_bit_exact(tmp_path):
    """2 epochs straight == 1 epoch, Ctrl-C early in epoch 2, resume in a new process."""
    args = [*SMALL, "--subset", "60", "--batch-size", "20", "--epochs", "2", "--ema", "0.9",
            "--width", "16"]
    run("resnet18/train.py", *args, "--out-dir", tmp_path / "a")
    code, rest = interrupt_in_epoch_2([sys.executable, "resnet18/train.py", *args, "--out-dir",
                                       tmp_path / "b", "--progress-every", "0"])
    assert code == 0 and "interrupted: saved" in rest
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ck["step"] > 0 and ck["args"]["recipe"] == "onecycle-150-cutmix"
    ck["args"]["recipe"] = "seed004"  # as checkpoints wrote it before the recipes were renamed
    torch.save(ck, tmp_path / "b" / "last.pt")
    run("resnet18/train.py", "--resume", "--out-dir", tmp_path / "b")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for key in ("model", "ema", "optimizer"):
        fa, fb = _flat(a[key]), _flat(b[key])
        assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa), key
    rows = lambda ck: [{k: v for k, v in r.items()  # noqa: E731
                        if "time" not in k and k != "peak_mem_mb"}
                       for r in ck["tracker"]["rows"]]
    assert str(rows(a)) == str(rows(b)) and b["epoch"] == 2  # str(): nan == nan; times differ


def _flat(d, prefix=""):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if isinstance(v, (dict, list)):
            out.update(_flat(v, f"{prefix}{k}."))
        elif torch.is_tensor(v):
            out[f"{prefix}{k}"] = v
    return out


def test_bad_input_gets_one_line_errors(trained, tmp_path):
    cases = [
        (["--mix-prob", "2"], "argument --mix-prob: 2.0 is outside [0, 1]"),
        (["--batch-size", "500"], "lower --batch-size"),
        (["--out-dir", trained], f"already holds a run: continue it with --resume, or start a "
                                 f"new one with --out-dir NEW_DIR (or delete {trained})"),
        (["--target-acc", "50"], "add --val-split N (e.g. 5000), or --select-on-test"),
        (["--val-split", "10", "--select-on-test"], "give one of them"),
        (["--resume", tmp_path / "none.pt"], "no checkpoint at"),
        (["--resume", trained / "last.pt", "--epochs", "5"], "resume with those values"),
    ]
    foreign = torch.load(trained / "last.pt", weights_only=True)
    foreign["arch"] = "resnet34"
    torch.save(foreign, tmp_path / "foreign.pt")
    cases.append((["--resume", tmp_path / "foreign.pt", "--out-dir", tmp_path / "x"],
                  "arch='resnet34'"))
    commands = [("resnet18/train.py", *SMALL, "--subset", "200", "--epochs", "1", *extra,
                 *([] if "--out-dir" in map(str, extra) else ["--out-dir", tmp_path / "o"]))
                for extra, _ in cases]
    commands.append(("resnet18/evaluate.py", "--checkpoint", tmp_path / "foreign.pt",
                     "--device", "cpu"))
    *results, p = run_many(*commands)  # one interpreter, each run as `python script args`
    for (extra, message), r in zip(cases, results):
        err = r.stderr.strip()
        assert r.returncode != 0 and err.startswith("error:") and message in err, (extra, err)
        assert len(err.splitlines()) == 1, err
    assert p.returncode != 0 and "resnet34" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    train = load_module(REPO / "resnet18" / "train.py", "resnet18_train_nan")
    args = train.parse_args([*SMALL, "--subset", "100", "--batch-size", "50", "--epochs", "3",
                             "--select-on-test", "--out-dir", str(tmp_path)])
    real, calls = train.mixing.soft_target_cross_entropy, []

    def poisoned(logits, target, smoothing):
        calls.append(1)
        loss = real(logits, target, smoothing)
        return loss * float("nan") if len(calls) > 2 else loss  # epoch 2 (2 steps an epoch)
    monkeypatch.setattr(train.mixing, "soft_target_cross_entropy", poisoned)
    try:
        with pytest.raises(FloatingPointError, match="holds epoch 1"):
            train.main(args)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 1


def test_help_from_the_root_and_from_inside_the_folder():
    inside = run_many(*[(REPO / "resnet18" / s, *(["--help"] if s != "model.py" else []))
                        for s in ("train.py", "evaluate.py", "gradcam.py", "app.py", "model.py")],
                      cwd=REPO / "resnet18")
    assert all(r.returncode == 0 for r in inside), [r.stderr for r in inside]
    assert "--epochs" in run("resnet18/train.py", "--help").stdout  # a real process, from root


def test_the_test_set_chooses_nothing_unless_asked(tmp_path, capsys):
    """By default: no best.pt, the final epoch's test top-1 is the result, no empty column.
    --select-on-test: the source projects' practice, best.pt on the test split, said in the log
    and in the closing line."""
    train = load_module(REPO / "resnet18" / "train.py", "resnet18_train_select")
    flags = [*SMALL, "--subset", "100", "--batch-size", "50", "--epochs", "2", "--width", "16"]
    try:
        plain = train.main(train.parse_args([*flags, "--out-dir", str(tmp_path / "a")]))
        picked = train.main(train.parse_args([*flags, "--select-on-test",
                                              "--out-dir", str(tmp_path / "b")]))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    out = capsys.readouterr().out
    assert not (tmp_path / "a" / "best.pt").exists() and (tmp_path / "b" / "best.pt").exists()
    assert plain["best_epoch"] is None and picked["best_split"] == "test"
    assert "best.pt: none (no --val-split); the final epoch is the run's result" in out
    closing = [ln for ln in out.splitlines() if ln.startswith("done:")]
    assert "best.pt" not in closing[0] and "chosen on the TEST split (--select-on-test)" in \
        closing[1] and "optimistic" in closing[1]
    header = (tmp_path / "a" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert not any(c.startswith(("val_", "ema_")) for c in header), header
    assert "train 100 of 50,000 (1 per class), test 100 of 10,000" in out


def test_a_run_directory_moves_and_a_foreign_data_dir_is_not_downloaded_into(trained,
                                                                            tmp_path):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(trained, moved)
    ok = run("resnet18/evaluate.py", "--checkpoint", moved / "last.pt", "--device", "cpu")
    assert (moved / "eval" / "report.json").is_file(), ok.stderr
    ck = torch.load(trained / "last.pt", weights_only=True)
    ck["args"].update(dataset="cifar100", data_dir="/home/someone/cifar")  # another machine's
    ck["dataset"] = "cifar100"
    torch.save(ck, tmp_path / "theirs.pt")
    p = run("resnet18/evaluate.py", "--checkpoint", tmp_path / "theirs.pt", "--device", "cpu",
            check=False)
    err = p.stderr.strip()
    assert p.returncode != 0 and len(err.splitlines()) == 1 and "--data-dir" in err, err
    assert "/home/someone/cifar" in err and not __import__("os").path.exists("/home/someone")
