"""The plain training loop of the learning-parity check, top to bottom, with a switch for each
way in which resnet18/train.py differs from it.

torchvision ResNet-18 with the CIFAR stem (conv1 3x3 stride 1, no max-pool); reflect-padded
random crop (pad 4) and horizontal flip, batched on tensors with per-SAMPLE offsets and flips
(--crop-per batch: one offset and one flip per batch); SGD lr 0.1, momentum 0.9, Nesterov, wd 5e-4;
OneCycleLR (pct_start 0.25) stepped per batch; label smoothing 0.1; inputs normalised with the
set's OWN per-channel mean/std (from its training images). Prints the final test top-1.

    python benchmark/plain_loop.py --data-dir /tmp/hue --epochs 2 --batch-size 128 --seed 0
    python benchmark/plain_loop.py --data-dir /tmp/hue --norm cifar --pad-mode zeros  # as train.py
"""
import argparse
import pickle
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--data-dir", required=True, help="holds cifar-100-python/{train,test}")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--batch-size", type=int, default=128)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--lr", type=float, default=0.1)
# the differences from resnet18/train.py, each one switch (train.py's value in brackets)
p.add_argument("--norm", choices=["own", "cifar"], default="own", help="[cifar]")
p.add_argument("--pad-mode", choices=["reflect", "zeros"], default="reflect",
               help="[zeros]")
p.add_argument("--crop-per", choices=["sample", "batch"], default="sample",
               help="[sample]")
p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
               help="[--no-nesterov]")
p.add_argument("--pct-start", type=float, default=0.25, help="[0.3]")
p.add_argument("--stem-init", choices=["default", "kaiming"], default="default",
               help="conv1: nn.Conv2d's default init, or kaiming_normal fan_out [kaiming]")
p.add_argument("--drop-last", action=argparse.BooleanOptionalAction, default=False,
               help="[--drop-last]")


def main(args):
    torch.manual_seed(args.seed)
    t_start = time.time()

    # ---- data: the official pickles -> uint8 (N, 3, 32, 32), int64 labels
    def read(name):
        path = Path(args.data_dir) / "cifar-100-python" / name
        if not path.is_file():
            raise SystemExit(f"error: no {path}; make the set with benchmark/parity_set.py --out "
                             "DIR, then pass --data-dir DIR")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        x = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).copy())
        return x, torch.tensor(d["fine_labels"], dtype=torch.long)

    x_train, y_train = read("train")
    x_test, y_test = read("test")
    if args.norm == "own":  # per-channel mean/std of the training images, pixels in [0, 1]
        px = x_train.float().div(255).transpose(0, 1).reshape(3, -1)
        mean, std = px.mean(1), px.std(1)
    else:
        mean, std = torch.tensor(CIFAR100_MEAN), torch.tensor(CIFAR100_STD)
    mean, std = mean[:, None, None], std[:, None, None]
    print(f"train {len(x_train)}, test {len(x_test)}; mean {mean.flatten().tolist()} "
          f"std {std.flatten().tolist()}")

    def normalize(x):
        return (x.float() / 255 - mean) / std

    def augment(x, pad=4):
        """Random crop of the padded batch and horizontal flip, per sample (or per batch)."""
        B = len(x)
        if args.pad_mode == "reflect":
            x = F.pad(normalize(x), (pad,) * 4, mode="reflect")
        else:  # black padding (0 in [0, 1]) normalised with the images, as train.py does
            x = normalize(F.pad(x, (pad,) * 4))
        n = B if args.crop_per == "sample" else 1
        dy, dx = torch.randint(0, 2 * pad + 1, (2, n)).expand(2, B)
        rows = (dy[:, None] + torch.arange(32))[:, None, :, None]  # (B, 1, 32, 1)
        cols = (dx[:, None] + torch.arange(32))[:, None, None, :]  # (B, 1, 1, 32)
        batch, chan = torch.arange(B)[:, None, None, None], torch.arange(3)[None, :, None, None]
        x = x[batch, chan, rows, cols]
        flip = (torch.rand(n) < 0.5).expand(B)
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    # ---- model: torchvision ResNet-18 with the CIFAR stem
    model = torchvision.models.resnet18(num_classes=100)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # nn.Conv2d's init: kaiming_uniform a=√5
    if args.stem_init == "kaiming":  # what torchvision does to its own convs, and model.py to all
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()

    # ---- optimisation
    n = len(x_train)
    steps = n // args.batch_size if args.drop_last else -(-n // args.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=args.nesterov,
                          weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps,
                                                pct_start=args.pct_start)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)


    @torch.no_grad()
    def test_top1():
        model.eval()
        hits = sum((model(normalize(x_test[i:i + 500])).argmax(1) == y_test[i:i + 500]).sum().item()
                   for i in range(0, len(x_test), 500))
        return 100 * hits / len(x_test)

    for epoch in range(args.epochs):
        model.train()
        t0, order, total = time.time(), torch.randperm(len(x_train)), 0.0
        for i in range(steps):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            loss = criterion(model(augment(x_train[idx])), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        top1 = test_top1()
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / steps:.4f}, test top-1 "
              f"{top1:.2f} %, {time.time() - t0:.0f} s", flush=True)
    print(f"final test top-1 {top1:.2f} %  (wall {time.time() - t_start:.0f} s)  {vars(args)}")


if __name__ == "__main__":
    main(p.parse_args())
