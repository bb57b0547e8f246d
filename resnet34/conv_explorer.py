"""See what one convolution does to one image at several kernel sizes, strides, paddings and
dilations (a to-do of the "CIFAR-100 ResNet-34 Training Pipeline" notebook: "take one image, run
any convolution filter and see how stride, kernel and padding affect it").

The image is a file (--image) or a test image (--index) of --dataset: of the whole test split,
as evaluate.py numbers it, or of --test-subset N images (as many of each class; quicker for the
synthetic set, which is drawn at the size asked for). The kernel is hand-made for
any odd size k (applied to the grey image, the mean of R, G and B, in [0, 1]):
  blur     box filter: every weight 1/k^2 (the mean of the window)
  edge     identity - blur: centre 1 - 1/k^2, the rest -1/k^2; sums to 0, so flat regions go to
           0 and outlines remain (a Laplacian-like high-pass; k=3 is the classic 8/-1 kernel / 9)
  sharpen  identity + edge = 2 identity - blur (unsharp masking); sums to 1
  emboss   w[i, j] = ((i - c) + (j - c)) / c, plus 1 at the centre c; k=3 is the classic
           [[-2,-1,0],[-1,1,1],[0,1,2]]: a relief lit from the top left
  random   normal weights of std 1/k (like a fresh conv layer's), from --seed
or `first-layer`: filter --filter of a checkpoint's conv1 (3 x k x k), applied to the normalized
RGB image as the network sees it; its size fixes k. Settings come as lists (length 1 = the same
for every setting, else one value each). Each output's size is predicted with
    out = floor((H + 2p - d(k - 1) - 1) / s) + 1        (the formula of torch.nn.Conv2d)
and printed next to the size F.conv2d actually produced. Writes conv_explorer.png to --out-dir.

    python resnet34/conv_explorer.py --dataset synthetic --test-subset 100 --index 3 --kernel edge
    python resnet34/conv_explorer.py --image photo.jpg --size 64 --kernel blur --kernel-sizes 3 7 15
    python resnet34/conv_explorer.py --checkpoint runs/resnet34/last.pt --kernel first-layer \\
        --filter 5 --index 0
"""
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from common import data, plots  # noqa: E402  (plots: the GOOD / BAD title colours)
from common.augment import Normalize  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from common.flags import Parser, ranged  # noqa: E402
from common.inference import stats_of  # noqa: E402
from common.metrics import save_figure  # noqa: E402

KERNELS = ("edge", "blur", "sharpen", "emboss", "random", "first-layer")


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--image", metavar="FILE", help="an image file (PNG/JPEG); else --index")
    p.add_argument("--size", type=int, default=0,
                   help="--image only: centre square resized to SIZE px (0 = as it is)")
    p.add_argument("--index", type=int, default=0, help="test image of --dataset")
    p.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100")
    p.add_argument("--test-subset", type=ranged(int, 0), default=0,
                   help="--index counts in N test images, as many of each class (0 = all)")
    p.add_argument("--data-dir", help="holds cifar-100-python/ (default: data/ in the repo)")
    p.add_argument("--kernel", choices=KERNELS, default="edge")
    p.add_argument("--checkpoint", help="for --kernel first-layer: a resnet34 (or any) checkpoint")
    p.add_argument("--filter", type=int, default=0,
                   help="for --kernel first-layer: which filter of conv1")
    p.add_argument("--kernel-sizes", type=int, nargs="+",
                   help="default: 3 3 3 5 3 7 (first-layer: the filter's size)")
    p.add_argument("--strides", type=int, nargs="+", default=[1, 1, 2, 1, 1, 3])
    p.add_argument("--paddings", type=int, nargs="+", default=[0, 1, 1, 0, 0, 3])
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 1, 1, 1, 2, 1])
    p.add_argument("--seed", type=int, default=0, help="for --kernel random")
    p.add_argument("--out-dir", default=str(HERE.parent / "runs" / HERE.name / "conv_explorer"))
    return p


def out_size(n, k, s, p, d):
    """torch.nn.Conv2d's output length along one axis of length n."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def make_kernel(name, k, seed=0):
    """A hand-made (k, k) kernel; see the module docstring for each definition."""
    if k < 1 or (k % 2 == 0 and name != "blur" and name != "random"):
        raise ValueError(f"--kernel {name} needs an odd kernel size (a centre pixel), got {k}")
    c = k // 2
    delta = torch.zeros(k, k)
    delta[c, c] = 1.0
    box = torch.full((k, k), 1.0 / k ** 2)
    if name == "blur":
        return box
    if name == "edge":
        return delta - box
    if name == "sharpen":
        return 2 * delta - box
    if name == "emboss":
        i = torch.arange(k, dtype=torch.float32) - c
        return (i[:, None] + i[None, :]) / max(c, 1) + delta
    if name == "random":
        return torch.randn(k, k, generator=torch.Generator().manual_seed(seed)) / k
    raise ValueError(f"unknown kernel {name!r}")


def first_layer_filter(path, index):
    """Filter `index` of the first conv of a checkpoint -> ((3, k, k) float tensor, the
    (mean, std) its inputs were normalized with)."""
    ckpt = load_checkpoint(path)
    state = ckpt["model"]  # the bare network's state dict, in any layout
    convs = [(n, w) for n, w in state.items() if n.endswith("weight") and w.ndim == 4]
    if not convs:
        raise CheckpointError(f"{path} holds no conv weights")
    name, w = next(((n, w) for n, w in convs if n == "conv1.weight"), convs[0])
    if w.shape[1] != 3:
        raise CheckpointError(f"{path}: {name} takes {w.shape[1]} channels, not RGB")
    if not 0 <= index < w.shape[0]:
        raise ValueError(f"--filter {index} is out of range: {name} has {w.shape[0]} filters "
                         f"(0..{w.shape[0] - 1})")
    return w[index].float(), stats_of(ckpt, (data.CIFAR100_MEAN, data.CIFAR100_STD))


def load_image(args):
    """-> (uint8 (3, H, W), title)."""
    if args.image:
        from torchvision.io import ImageReadMode, decode_image
        from torchvision.transforms.v2.functional import center_crop, resize
        if not Path(args.image).is_file():
            raise ValueError(f"no image file at {args.image}")
        try:
            img = decode_image(str(args.image), mode=ImageReadMode.RGB)
        except Exception as e:  # drop the C++ source location torchvision puts in front
            reason = re.sub(r"^.*\.cpp:\d+, ", "", str(e).splitlines()[0])
            raise ValueError(f"cannot read image {args.image}: {reason}") from None
        if args.size:
            img = resize(center_crop(img, min(img.shape[1:])), [args.size] * 2, antialias=True)
        return img, Path(args.image).name
    # subset: the training split is not used, and the synthetic one is drawn at the size asked
    x, y = data.load_splits(args.dataset, args.data_dir, subset=data.NUM_CLASSES,
                            test_subset=args.test_subset)["test"]
    if not 0 <= args.index < len(x):
        raise ValueError(f"--index {args.index} is out of range: the {args.dataset} test split "
                         f"has {len(x)} images (0..{len(x) - 1})")
    name = data.class_names(args.dataset)[0][y[args.index]]
    return x[args.index], f"{args.dataset} test #{args.index}: {name}"


def settings(args):
    lists = [args.kernel_sizes, args.strides, args.paddings, args.dilations]
    n = max(len(v) for v in lists)
    for flag, v in zip(("--kernel-sizes", "--strides", "--paddings", "--dilations"), lists):
        if len(v) not in (1, n):
            raise ValueError(f"{flag} has {len(v)} values; give 1 or {n} (one per setting)")
        if min(v) < (0 if flag == "--paddings" else 1):
            raise ValueError(f"{flag} must be {'>= 0' if flag == '--paddings' else '>= 1'}")
    return [tuple(v[i] if len(v) > 1 else v[0] for v in lists) for i in range(n)]


def dilated(w, d):
    """The kernel as it lands on the input: d - 1 zeros between taps, (d(k-1)+1)^2 pixels."""
    k = w.shape[-1]
    out = torch.zeros(*w.shape[:-2], d * (k - 1) + 1, d * (k - 1) + 1)
    out[..., ::d, ::d] = w
    return out


def main(args):
    img, title = load_image(args)
    H, W = img.shape[1:]
    if args.kernel == "first-layer":
        if not args.checkpoint:
            raise ValueError("--kernel first-layer needs --checkpoint PATH")
        filt, stats = first_layer_filter(args.checkpoint, args.filter)  # (3, k, k)
        x = Normalize(*stats)(img[None])  # (1, 3, H, W), as conv1 sees it
        k0 = filt.shape[-1]
        if args.kernel_sizes and any(k != k0 for k in args.kernel_sizes):
            print(f"note: the checkpoint filter is {k0}x{k0}; --kernel-sizes is ignored")
        args.kernel_sizes = [k0]
    else:
        x = img[None].float().div(255).mean(1, keepdim=True)  # (1, 1, H, W) grey in [0, 1]
        args.kernel_sizes = args.kernel_sizes or [3, 3, 3, 5, 3, 7]
    rows = []
    for k, s, p, d in settings(args):
        w = filt[None] if args.kernel == "first-layer" else make_kernel(args.kernel, k,
                                                                        args.seed)[None, None]
        want = (out_size(H, k, s, p, d), out_size(W, k, s, p, d))
        try:
            y = F.conv2d(x, w, stride=s, padding=p, dilation=d)[0, 0]
            got = tuple(y.shape)
        except RuntimeError:  # the dilated kernel does not fit in the padded input
            y, got = None, (0, 0)
        rows.append({"k": k, "s": s, "p": p, "d": d, "w": w[0], "y": y, "want": want, "got": got})
        print(f"k={k} s={s} p={p} d={d}: floor(({H} + 2*{p} - {d}*({k}-1) - 1)/{s}) + 1 = "
              f"{want[0]} (x {want[1]}), conv2d gave {'x'.join(map(str, got)) or 'nothing'}")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure(img, title, rows, args.kernel, out / "conv_explorer.png")
    print(f"wrote {out / 'conv_explorer.png'}")
    return rows


def figure(img, title, rows, kernel, path):
    """Top row: the input and each output map, all at the same pixel scale so a smaller output
    looks smaller. Bottom row: each kernel as it lands on the input (dilation spreads it)."""
    n = len(rows)
    H, W = img.shape[1:]
    side = max([H, W] + [max(r["got"]) for r in rows])  # pixels shown per panel
    fig = Figure(figsize=(2.6 * (n + 1), 6.4), layout="constrained")
    axes = fig.subplots(2, n + 1, height_ratios=(1.4, 1))
    signed = kernel not in ("blur", "sharpen", "emboss")  # these sum to 1: image-like; rest +-
    ax = axes[0, 0]
    ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest", extent=(0, W, H, 0))
    ax.set_title(f"input {H}x{W}\n{title}", fontsize=9)
    for ax, r in zip(axes[0, 1:], rows):
        ok = r["want"] == r["got"] or (min(r["want"]) <= 0 and r["y"] is None)
        ax.set_title(f"k={r['k']} s={r['s']} p={r['p']} d={r['d']}\n"
                     f"formula {r['want'][0]}x{r['want'][1]}, actual "
                     f"{r['got'][0]}x{r['got'][1]}", fontsize=9,
                     color=plots.GOOD if ok else plots.BAD)
        if r["y"] is None:
            ax.text(side / 2, side / 2, f"no output:\nkernel spans {r['d'] * (r['k'] - 1) + 1} px,"
                    f"\npadded input {H + 2 * r['p']} px", ha="center", va="center", fontsize=9)
        else:
            y = r["y"].numpy()
            lim = float(np.abs(y).max()) or 1.0
            kw = dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if signed else dict(cmap="gray")
            ax.imshow(y, interpolation="nearest", extent=(0, y.shape[1], y.shape[0], 0), **kw)
    for ax in axes[0]:
        ax.set(xlim=(0, side), ylim=(side, 0), xticks=[], yticks=[], aspect="equal")
    ax = axes[1, 0]
    ax.set_axis_off()
    ax.text(0, 0.5, "output size per axis:\n\n floor((H + 2p - d(k-1) - 1) / s) + 1\n\n"
            f"kernel: {kernel}\n" + ("(drawn: its mean over R, G, B)\n"
                                     if kernel == "first-layer" else "")
            + ("colours: red +, blue -" if signed else "grey scale"),
            fontsize=9, va="center", transform=ax.transAxes)
    for ax, r in zip(axes[1, 1:], rows):
        w = dilated(r["w"], r["d"])
        w = w.mean(0) if w.ndim == 3 else w  # a first-layer filter: its mean over R, G, B
        lim = float(w.abs().max()) or 1.0
        ax.imshow(w.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        if w.shape[-1] <= 9:
            for (i, j), v in np.ndenumerate(w.numpy()):
                ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 0.6 * lim else "black")
        ax.set_title(f"kernel {r['k']}x{r['k']}, dilation {r['d']}: spans "
                     f"{w.shape[-1]}x{w.shape[-1]}", fontsize=8)
        ax.set(xticks=[], yticks=[])
    save_figure(fig, path)


if __name__ == "__main__":
    try:
        main(build_parser().parse_args())
    except (data.DataError, CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}")
