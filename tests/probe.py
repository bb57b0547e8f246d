"""Runs a folder's train.py code in one process or under torchrun, with a probe, for the tests
of torchrun (test_distributed.py) and CUDA (test_cuda.py). Not a test itself.

    python tests/probe.py FOLDER SCENARIO OUT_DIR -- TRAIN_FLAGS...                  # 1 process
    python -m torch.distributed.run --nproc_per_node 2 tests/probe.py FOLDER SCENARIO OUT_DIR -- ...

SCENARIO
  record  train.main with train_step wrapped to save the (images, targets, loss) of each step
  nobn    train.main with build_model swapped for a small network without BatchNorm or dropout
  eval    the test split through evaluate() with a fixed network; each rank saves its result
  syncs   train.main under torch.cuda.set_sync_debug_mode("warn"): how often each Python line
          (the repo's or torch's) made the host wait for the GPU, into OUT_DIR/syncs.json
          as {"file:line": count}
  steps   OUT_DIR/seen_rank0.pt's first batch (from `record`) through train_step on --device,
          for every --amp x channels_last, and with --compile once more compiled at the recipe's
          bf16 + channels_last: the first step's loss and the losses of 2 more steps, with the
          GradScaler's scale. The flags must switch every dropout off (the test's tolerance
          measures precision, not dropout masks): refused otherwise
  collectives  train.main (under torchrun with CIFAR100_FORCE_DDP=1) counting the calls that
          reach torch.distributed, into OUT_DIR/collectives_rank<r>.json with the process
          group's backend and size and the class (and device_ids) of the model train.py trains
"""
import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, load_module  # noqa: E402

folder, scenario, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
argv = sys.argv[sys.argv.index("--") + 1:]
rank = int(os.environ.get("RANK", "0"))
train = load_module(REPO / folder / "train.py", f"{folder}_train_probe")

if scenario == "record":
    seen, real_step = [], train.train_step

    def recording_step(model, x, target, *args, **kwargs):
        loss, logits = real_step(model, x, target, *args, **kwargs)
        seen.append((x.cpu().clone(), target.cpu().clone(), float(loss)))
        return loss, logits
    train.train_step = recording_step
    train.main(train.parse_args(argv))
    torch.save(seen, out / f"seen_rank{rank}.pt")
elif scenario == "nobn":
    def small_network(args):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(16, 100)), {}
    train.build_model = small_network
    train.main(train.parse_args(argv))
elif scenario == "eval":
    args = train.parse_args(argv)
    rank, world, device = train.distributed.init(torch.device("cpu"))
    _, _, loaders = train.make_loaders(args, device, rank, world)
    torch.manual_seed(0)
    model = train.build_model(args)[0]
    result = train.evaluate(model, loaders["test"])
    images = sum(len(y) for _, y in loaders["test"])  # this rank's share
    torch.save({"result": result, "images": images}, out / f"eval_rank{rank}.pt")
elif scenario == "syncs":
    import collections
    import json
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every occurrence, not the first per line
        torch.cuda.set_sync_debug_mode("warn")
        train.main(train.parse_args(argv))
        torch.cuda.set_sync_debug_mode(0)
    where = collections.Counter(f"{w.filename}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))  # torch's own lines too
    (out / "syncs.json").write_text(json.dumps(dict(where.most_common()), indent=1))
elif scenario == "steps":
    args = train.parse_args(argv)
    device = torch.device(args.device)
    dropouts = {k: v for k, v in train.build_model(args)[1].items() if "drop" in k}
    if any(dropouts.values()):
        raise SystemExit(f"steps: switch dropout off ({dropouts}): its masks would differ "
                         "between the CPU run and this one")
    x, target, _ = torch.load(out / "seen_rank0.pt")[0]
    cases = [(amp, channels_last, False) for amp in ("off", "bf16", "fp16")
             for channels_last in (False, True)]
    cases += [("bf16", True, True)] if args.compile else []  # the recipe's, compiled
    results = []
    for amp, channels_last, compiled in cases:
        torch.manual_seed(args.seed)  # the initial weights of the recorded CPU run
        model = train.build_model(args)[0].to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        run_model = torch.compile(model) if compiled else model
        optimizer = train.runtime.build_optimizer(args, model.parameters(), device)  # as train.py
        dtype = train.runtime.amp_dtype(amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        xd = x.to(device)
        if channels_last:
            xd = xd.contiguous(memory_format=torch.channels_last)
        model.train()
        losses = [float(train.train_step(run_model, xd, target.to(device), optimizer, scaler,
                                         dtype, args.label_smoothing, args.clip_grad)[0])
                  for _ in range(3)]
        results.append({"amp": amp, "channels_last": channels_last, "compile": compiled,
                        "losses": losses,
                        "scale": scaler.get_scale() if scaler.is_enabled() else None})
    torch.save(results, out / f"steps_{device.type}.pt")
elif scenario == "collectives":
    import collections
    import json
    import torch.distributed as dist
    calls = collections.Counter()

    def counting(name):
        real = getattr(dist, name)

        def call(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return call
    # common/distributed.py calls them as dist.<name>, looked up at each call
    for name in ("all_reduce", "broadcast", "all_gather_object", "barrier"):
        setattr(dist, name, counting(name))
    wrapped, real_data_parallel = {}, train.distributed.data_parallel

    def recording_data_parallel(model, device, sync_bn=False):
        run_model = real_data_parallel(model, device, sync_bn)
        wrapped.update(cls=type(run_model).__name__,
                       device_ids=getattr(run_model, "device_ids", None))
        return run_model
    train.distributed.data_parallel = recording_data_parallel
    train.main(train.parse_args(argv))
    on = dist.is_available() and dist.is_initialized()
    (out / f"collectives_rank{rank}.json").write_text(json.dumps({
        "backend": dist.get_backend() if on else None, "world": dist.get_world_size() if on
        else None, "model": wrapped, "calls": dict(calls)}))
train.distributed.close()
