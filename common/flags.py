"""Command-line flags: ranges checked by the flag's own type (`ranged`), one-line parse errors,
every default shown in --help, named recipes as defaults (`Parser`), and the flags all three
train.py share (`training_parser`)."""
import argparse
import textwrap
from pathlib import Path


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each flag's default after its help; the description and epilog keep their line breaks."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and whose --help shows every default.
    recipes: {name: {flag dest: value}}, listed in the epilog; select_recipe(name) makes one the
    defaults (flags given still win). renamed: {old name: name}, so old checkpoints still resume."""

    def __init__(self, description, recipes=None, epilog=None, renamed=None, **kwargs):
        if recipes:  # the epilog: one paragraph a recipe, broken only between flags
            lines = [textwrap.fill(" ".join(map(_as_flag, values.items())), 95,
                                   initial_indent=f"  {name}: ", subsequent_indent="    ",
                                   break_on_hyphens=False).replace(NBSP, " ")
                     for name, values in recipes.items()]
            epilog = (epilog or "") + "recipes (--recipe NAME sets these defaults; flags you " \
                "give still win):\n" + "\n".join(lines) + "\n"
        super().__init__(description=description, formatter_class=_ShowDefaults, epilog=epilog,
                         **kwargs)
        self.recipes, self.renamed, self.base_defaults = recipes or {}, renamed or {}, None

    def select_recipe(self, name):
        """The recipe's values become the defaults; a flag it does not name keeps the flag's
        own default (never another recipe's)."""
        name = self.renamed.get(name, name)
        if name not in self.recipes:
            self.error(f"argument --recipe: unknown recipe {name!r}; choose from "
                       f"{', '.join(self.recipes)}")
        if self.base_defaults is None:  # the flag table's own, before any recipe
            self.base_defaults = {a.dest: a.default for a in self._actions
                                  if a.default is not argparse.SUPPRESS}
        self.set_defaults(**{**self.base_defaults, **self.recipes[name], "recipe": name})

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


NBSP = "\xa0"  # joins a flag to its values, so that the epilog's lines break between flags


def _as_flag(item):
    """("scale", [0.85, 1.15]) -> "--scale 0.85 1.15"; booleans as --name / --no-name."""
    name, value = item[0].replace("_", "-"), item[1]
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name}{NBSP}" + (NBSP.join(map(str, value)) if isinstance(value, list) else
                                str(value))


def ranged(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """An argparse type: `kind` (int or float) within [lo, hi]; *_open excludes that end."""
    def parse(text):
        value = kind(text)  # a ValueError here reads "invalid int value: 'x'"
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if below or above:
            span = (f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, "
                    f"{'inf' if hi is None else hi}{')' if hi_open or hi is None else ']'}")
            raise argparse.ArgumentTypeError(f"{value} is outside {span}")
        return value
    parse.__name__ = kind.__name__
    return parse


def training_parser(doc, recipes, add_model_args, folder, add_help=True, renamed=None):
    """The flags every train.py shares, grouped, with the first recipe's values as defaults;
    add_model_args(group) adds the folder's own. --out-dir defaults to <repo>/runs/<folder name>,
    --data-dir to None: <repo>/data of the machine a run is on, even after it moves (--resume)."""
    p = Parser(doc.split("\n\n")[0], recipes, add_help=add_help, renamed=renamed)
    p.add_argument("--recipe", default=next(iter(recipes)), choices=list(recipes),
                   help="a named set of defaults, listed at the end")
    unit, share, count = ranged(float, 0, 1), ranged(float, 0, 1), ranged(int, 0)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", help="holds cifar-100-python/ (default: data/ in the repo)")
    g.add_argument("--dataset", choices=["cifar100", "synthetic"], default="cifar100",
                   help="synthetic: the offline stand-in, same shapes and class names")
    g.add_argument("--subset", type=count, default=0,
                   help="train on N images, as many of each class (0 = all); not the test split")
    g.add_argument("--test-subset", type=count, default=0,
                   help="test on N images, as many of each class (0 = all)")
    g.add_argument("--val-split", type=count, default=0,
                   help="hold out N training images, as many of each class, to choose best.pt "
                   "on and for --target-acc (0 = none, and no best.pt)")
    g.add_argument("--select-on-test", action="store_true",
                   help="the source projects' practice: best.pt is the epoch with the best TEST "
                   "top-1 and --target-acc watches the test split (optimistic; the log says so)")
    g.add_argument("--num-workers", type=count, default=0, help="accepted for the ResNet-18 "
                   "write-up's commands; unused: batches are drawn and augmented on the device")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=ranged(int, 1), help="passes over the training set")
    g.add_argument("--batch-size", type=ranged(int, 1),
                   help="images per optimizer step, over all GPUs under torchrun")
    g.add_argument("--accum-steps", type=ranged(int, 1), default=1,
                   help="split each batch into K micro-batches (gradient accumulation): the "
                   "memory of batch/K and the whole batch's mean gradient, but BatchNorm "
                   "normalizes each micro-batch alone and moves its statistics K times")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], help="SGD with momentum, or AdamW")
    g.add_argument("--lr", type=ranged(float, 0, 100, lo_open=True), help="peak learning rate")
    g.add_argument("--momentum", type=share, default=0.9, help="SGD only")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False,
                   help="SGD only")
    g.add_argument("--weight-decay", type=unit, help="L2 factor (SGD) or decoupled (AdamW)")
    g.add_argument("--scheduler", choices=["onecycle", "cosine", "cosine-restarts", "step"],
                   help="stepped once per optimizer step")
    g.add_argument("--pct-start", type=ranged(float, 0, 1, True, True), default=0.3,
                   help="onecycle: warm-up share")
    g.add_argument("--div-factor", type=ranged(float, 1), default=25.0,
                   help="onecycle: start lr = lr / this")
    g.add_argument("--final-div-factor", type=ranged(float, 1), default=1e4,
                   help="onecycle: end lr = start lr / this")
    g.add_argument("--t0", type=ranged(int, 1), default=50, help="cosine-restarts: epochs")
    g.add_argument("--tmult", type=ranged(int, 1), default=2, help="cosine-restarts: growth")
    g.add_argument("--step-epochs", type=ranged(int, 1), default=30, help="step: epochs per drop")
    g.add_argument("--gamma", type=unit, default=0.1, help="step: lr factor per drop")
    g.add_argument("--clip-grad", type=ranged(float, 0), default=0.0, help="max grad norm, 0 = off")
    g.add_argument("--target-acc", type=ranged(float, 0, 100), default=0.0,
                   help="stop once validation top-1 %% reaches it (0 = never; needs "
                   "--val-split, or --select-on-test)")
    g = p.add_argument_group("regularization")
    g.add_argument("--label-smoothing", type=ranged(float, 0, 1, hi_open=True),
                   help="share of the target spread over all classes")
    g.add_argument("--mixup-alpha", type=ranged(float, 0), default=0.0, help="0 = no Mixup")
    g.add_argument("--cutmix-alpha", type=ranged(float, 0), default=0.0, help="0 = no CutMix")
    g.add_argument("--mix-prob", type=share, default=1.0, help="share of batches mixed")
    g.add_argument("--switch-prob", type=share, default=0.5, help="CutMix share if both alphas")
    g.add_argument("--ema", type=ranged(float, 0, 1, hi_open=True), default=0.0,
                   help="EMA decay per step, e.g. 0.999 (0 = off)")
    add_model_args(p.add_argument_group("model"))
    g = p.add_argument_group("augmentation (per image, batched on the device)")
    g.add_argument("--pad", type=ranged(int, 0, 16), default=4, help="random crop of the "
                   "zero-padded image, px")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True, help="p 0.5")
    g.add_argument("--rotate", type=ranged(float, 0, 180), default=0.0, help="max, degrees")
    g.add_argument("--translate", type=ranged(float, 0, 0.5), default=0.0,
                   help="max shift, fraction of the side")
    g.add_argument("--scale", type=ranged(float, 0.1, 10), nargs=2, default=[1.0, 1.0],
                   metavar=("LO", "HI"), help="zoom range")
    g.add_argument("--affine-p", type=share, default=1.0, help="chance of rotate/translate/scale")
    g.add_argument("--jitter", type=ranged(float, 0, 1), nargs=4, default=[0.0, 0.0, 0.0, 0.0],
                   metavar=("B", "C", "S", "H"),
                   help="colour jitter: brightness contrast saturation hue")
    g.add_argument("--erase-p", type=share, default=0.0, help="random erasing probability")
    g.add_argument("--holes-p", type=share, default=0.0, help="coarse dropout probability")
    g.add_argument("--holes", type=ranged(int, 1, 64), default=8, help="coarse dropout: squares")
    g.add_argument("--hole-size", type=ranged(int, 1, 32), nargs=2, default=[8, 8],
                   metavar=("LO", "HI"), help="coarse dropout: each side drawn from LO..HI px")
    g.add_argument("--noise-p", type=share, default=0.0, help="Gaussian noise (never with holes)")
    g.add_argument("--noise-std", type=ranged(float, 0, 1), nargs=2, default=[0.0125, 0.0278],
                   metavar=("LO", "HI"), help="Gaussian noise: std range, on [0, 1] pixels")
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto: CUDA, else MPS, else CPU")
    g.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto",
                   help="auto: bf16 on CUDA GPUs with native bf16 (compute capability 8.0+), "
                   "fp16 with loss scaling on older ones; off on CPU/MPS")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout; None = on for CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--deterministic", action="store_true", help="CUDA: deterministic kernels and "
                   "no cuDNN autotuning, so reruns and resumes are bit-exact (slower)")
    g.add_argument("--seed", type=int, default=0, help="data order, augmentation and init")
    g.add_argument("--out-dir", default=str(Path(folder).parent / "runs" / Path(folder).name),
                   help="the run directory")
    g.add_argument("--save-every", type=count, default=0,
                   help="also keep epoch_N.pt every N epochs (0 = never)")
    g.add_argument("--resume", nargs="?", const="last", default=None, metavar="PATH",
                   help="continue from PATH, or from OUT_DIR/last.pt; flags not given are restored")
    g.add_argument("--init", metavar="CKPT", help="start from these weights with a fresh "
                   "optimizer and schedule (fine-tuning, or going past a finished run)")
    g.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on CUDA: BatchNorm statistics over the global batch")
    g.add_argument("--tensorboard", action="store_true", help="also log each epoch's figures to "
                   "OUT_DIR/tensorboard (pip install -r requirements-tensorboard.txt)")
    g.add_argument("--progress-every", type=ranged(float, 0), default=10.0, help="seconds")
    p.select_recipe(next(iter(recipes)))  # so --help shows the recipe's values
    return p


def parse_training_args(build_parser, argv=None, saved_args=None):
    """Flags on the command line > the checkpoint's flags (--resume) > the recipe's defaults.
    saved_args(path) -> the args dict stored in the checkpoint at path."""
    pre = build_parser(add_help=False)
    pre.set_defaults(recipe=None, out_dir=None)  # None: not on the command line
    given, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if given.resume:
        run_dir = Path(given.out_dir or parser.get_default("out_dir"))
        path = run_dir / "last.pt" if given.resume == "last" else Path(given.resume)
        saved = dict(saved_args(path))
        recipe = saved["recipe"] = parser.renamed.get(saved.get("recipe"), saved.get("recipe"))
        if given.recipe and given.recipe != recipe:
            parser.error(f"argument --recipe: the checkpoint was trained with recipe "
                         f"{recipe!r}; drop --recipe when resuming")
        parser.select_recipe(recipe or next(iter(parser.recipes)))
        parser.set_defaults(**{**saved, "resume": None, "init": None,  # --init was its start
                               "out_dir": str(given.out_dir or path.parent)})
    elif given.recipe:
        parser.select_recipe(given.recipe)
    args = parser.parse_args(argv)
    if given.resume:
        args.resume = str(path)
    return args


def check_training_args(args, world):
    """What a single flag's type cannot check."""
    if args.batch_size % (world * args.accum_steps):
        raise ValueError(f"--batch-size {args.batch_size} does not split into {world} rank(s) x "
                         f"{args.accum_steps} micro-batch(es) (--accum-steps): make it a "
                         f"multiple of {world * args.accum_steps}")
    if args.target_acc and not (args.val_split or args.select_on_test):
        raise ValueError(f"--target-acc {args.target_acc} stops on a validation score: add "
                         "--val-split N (e.g. 5000), or --select-on-test to stop on the test "
                         "score as the source projects did")
    if args.val_split and args.select_on_test:
        raise ValueError("--val-split chooses best.pt on held-out training images, "
                         "--select-on-test on the test split: give one of them")
    if args.resume and args.init:
        raise ValueError("--resume continues a run, --init starts a new one from weights: "
                         "give one of them")
    if args.holes_p + args.noise_p > 1:
        raise ValueError("--holes-p plus --noise-p must be at most 1 (they share one draw)")
    if args.scale[0] > args.scale[1]:
        raise ValueError(f"--scale {args.scale[0]} {args.scale[1]}: LO must not exceed HI")
