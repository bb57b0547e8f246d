"""A web demo of a CIFAR ResNet-18 checkpoint, as the "ResNet-18 — CIFAR-100 Classification
(From Scratch, 150 Epochs)" project serves its model in a Hugging Face Space: drop in an image, see
the top-5 classes, the superclass of the top one, and the Grad-CAM map of where the network found
the evidence for it (Selvaraju et al. 2017, arXiv:1610.02391). Offline, on the CPU by default.

    pip install -r requirements-demo.txt -c constraints.txt
    python resnet18/app.py --checkpoint runs/resnet18/last.pt     # then open http://127.0.0.1:7860

The numbers are those of `evaluate.py --image FILE` (the same read_image and predict); the map is
gradcam.py's (common.gradcam at auto_layer). A checkpoint trained on `--dataset synthetic` names
its classes as that set does ("h-stripes 5px / disk", superclass "h-stripes 5px"). A Python
client calls the API named "predict":

    Client("http://127.0.0.1:7860").predict(handle_file("photo.jpg"), api_name="/predict")
"""
import importlib.util
import os
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not (HERE.parent / "common" / "__init__.py").is_file():  # a folder copied on its own
    sys.exit(f"error: {HERE.name}/ needs the repo's common/ folder next to it, in "
             f"{HERE.parent}: copy it there (cp -r REPO/common {HERE.parent}/)")
sys.path.insert(0, str(HERE.parent))  # the repo root, so `common` imports from any directory

import numpy as np  # noqa: E402

from common import runtime  # noqa: E402
from common.augment import Normalize  # noqa: E402
from common.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from common.data import (CIFAR100_MEAN, CIFAR100_STD, FINE_NAMES, FINE_TO_COARSE,  # noqa: E402
                         class_names)
from common.flags import Parser, ranged  # noqa: E402
from common.gradcam import find_layer, gradcam_maps, overlay  # noqa: E402
from common.inference import load_model, predict, read_image, stats_of  # noqa: E402
from model import resnet18  # noqa: E402

# ---- the model: the only lines that differ between the app.py files -----------------------
FACTORY = resnet18  # rebuilds the checkpoint's network; checkpoints name it by its __name__
ARGS_OF_STATE = None  # a bare state dict gets the factory's default arguments


def auto_layer(model):
    """the last residual block, layer4.1 (512 maps of 4x4)"""
    return "layer4[-1]"


# ---- everything below is shared by the app.py files ----------------------------------------
RUN_DIR = HERE.parent / "runs" / HERE.name  # where this folder's train.py writes
EXAMPLES = sorted((HERE / "examples").glob("*.png"))  # made from the synthetic test set (README)
MAX_PIXELS = 20_000_000  # non-JPEG decode cap: an 8000x8000 PNG takes 2.5 s and 0.5 GB (README)
ZOOM = 8  # 32x32 shown as 256x256, nearest neighbour: each pixel the network saw stays a square
NO_GRADIO = ("error: the web demo needs gradio: "
             "pip install -r requirements-demo.txt -c constraints.txt")
CSS = ("#input img { width: 100%; height: 100%; object-fit: contain; }\n"  # small ones too
       "#input img, .pixels img { image-rendering: pixelated; }")


def build_parser():
    p = Parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(RUN_DIR / "last.pt"),
                   help="a training checkpoint, a bare state dict or a {'model_state_dict': ...}")
    p.add_argument("--layer", default="auto",
                   help=f'the Grad-CAM layer, e.g. "layer3"; auto: {auto_layer.__doc__}')
    p.add_argument("--ema", action="store_true", help="serve the EMA weights")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves the local network")
    p.add_argument("--port", type=ranged(int, 1, 65535), default=7860)
    p.add_argument("--share", action="store_true",
                   help="also a temporary public link through Gradio's servers (needs internet)")
    return p


def import_gradio():
    """Gradio (main checked it is there), offline: no usage statistics, no version check."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as e:  # there, but broken (a half-finished install, a missing dependency)
        raise SystemExit(f"{NO_GRADIO} (importing it failed: {e})") from None
    return gradio


def check_file(path):
    """Refuse before decoding what would only waste time: an empty file, a huge non-JPEG (a JPEG
    of any size is decoded at 1/8 scale by read_image's draft)."""
    from PIL import Image  # Pillow comes with torchvision
    if path.stat().st_size == 0:
        raise ValueError(f"{path.name} is empty (0 bytes); upload an image file")
    try:
        with Image.open(path) as im:  # reads the header only
            (w, h), kind = im.size, im.format
    except Exception:
        return  # not an image: read_image says why
    if kind != "JPEG" and w * h > MAX_PIXELS:
        raise ValueError(f"{path.name} is a {w}x{h} {kind} ({w * h / 1e6:.0f} megapixels); the "
                         f"demo decodes at most {MAX_PIXELS / 1e6:.0f} megapixels of a {kind} (the "
                         "network sees 32x32): shrink it, or send it as a JPEG")


def classifier(model, layer, device, names, stats):
    """-> classify(path): the top-5 {class: probability}, the superclass line, the 32x32 input
    and its Grad-CAM overlay for the top class (both uint8, ZOOM times larger).
    names: (fine names, superclass names) of the checkpoint's dataset (data.class_names);
    stats: the (mean, std) it was trained with (inference.stats_of)."""
    fine_names, coarse_names = names
    normalize = Normalize(*stats)
    one_at_a_time = threading.Lock()  # Grad-CAM hooks the model: requests must not overlap

    def classify(path):
        path = Path(path)
        check_file(path)
        x = read_image(path)[None]                                   # (1, 3, 32, 32) uint8
        with one_at_a_time:
            p = predict(model, x, normalize, device)[0]              # as evaluate.py --image
            cam = gradcam_maps(model, layer, x, normalize)[0]        # the top class's map
        fine = fine_names if len(p) == len(fine_names) else [str(c) for c in range(len(p))]
        top5 = {fine[c]: float(q) for q, c in zip(*p.topk(5))}  # float32 values, exactly
        top = int(p.argmax())
        group = "(not CIFAR-100's 100 classes)"
        if len(p) == len(FINE_TO_COARSE):
            mates = [c for c in range(len(p)) if FINE_TO_COARSE[c] == FINE_TO_COARSE[top]]
            group = (f"{coarse_names[FINE_TO_COARSE[top]]}: its 5 classes together "
                     f"{100 * float(p[mates].sum()):.1f}%")

        def big(img):  # (32, 32, 3) floats in [0, 1] -> (256, 256, 3) uint8
            return (img * 255).round().astype(np.uint8).repeat(ZOOM, 0).repeat(ZOOM, 1)
        return top5, group, big(x[0].permute(1, 2, 0).numpy() / 255), big(overlay(x[0], cam))
    return classify


def example_label(path, fine_names):
    """An example file is named after its label's CIFAR-100 class (apple.png: label 0); the
    gallery shows that label's name in the checkpoint's dataset."""
    return fine_names[FINE_NAMES.index(path.stem)] if path.stem in FINE_NAMES else path.stem


def build_page(gr, classify, about, fine_names=FINE_NAMES):
    def serve(image):  # the file as sent: its FileData (preprocess=False), or an example's path
        if image is None:
            raise gr.Error("no image: drop one in the first box, or pick an example")
        path = Path(image if isinstance(image, str) else image["path"])
        try:
            return classify(path)
        except ValueError as e:  # the page shows it; the server goes on serving
            raise gr.Error(str(e).replace(str(path), path.name), print_exception=False) from None

    with gr.Blocks(title="CIFAR-100 ResNet-18 demo", analytics_enabled=False) as demo:
        gr.Markdown("## What does a CIFAR-100 ResNet-18 see in your image?\n"
                    "Drop an image in the first box, or pick an example below it. The network "
                    "sees its centre square shrunk to 32x32 pixels, as CIFAR-100's photos are, "
                    "and answers with its five most likely classes of 100.")
        with gr.Row(equal_height=True):  # the file, what the network sees, where it looked
            image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                             label="Your image (any size)", elem_id="input", height=300)
            kw = dict(format="png", interactive=False, buttons=["download"], height=300,
                      elem_classes="pixels")
            seen = gr.Image(label="What the network sees: 32x32", elem_id="seen", **kw)
            cam = gr.Image(label="Grad-CAM of the top class", elem_id="cam", **kw)
        with gr.Row():
            examples_place = gr.Column()
            top5 = gr.Label(num_top_classes=5, label="Top-5 classes", elem_id="top5")
            with gr.Column():
                group = gr.Textbox(label="Superclass of the top class", interactive=False,
                                   elem_id="superclass")
                gr.Markdown("**Grad-CAM** (Selvaraju et al. 2017) colours where the features "
                            "that raise the top class's score fire: red most, blue least. The "
                            f"32x32 images are shown {ZOOM}x, each pixel a square.  \n{about}")
        outputs = [top5, group, seen, cam]
        with examples_place:  # clicking one shows it and classifies it: no second request
            gr.Examples([str(p) for p in EXAMPLES], inputs=image, elem_id="examples",
                        example_labels=[example_label(p, fine_names) for p in EXAMPLES],
                        examples_per_page=12,
                        label="Examples: 32x32 images of the synthetic test set, by class",
                        fn=serve, outputs=outputs, run_on_click=True, cache_examples=False)
        # upload, not change: change also fires for examples, and twice as an image replaces one
        image.upload(serve, image, outputs, api_name="predict", preprocess=False)
        image.clear(lambda: (None, "", None, None), None, outputs, api_visibility="private")
    return demo


def dataset_of(ckpt):
    """The dataset a checkpoint was trained on; a bare state dict: CIFAR-100."""
    return ckpt.get("args", {}).get("dataset") or ckpt.get("dataset") or "cifar100"


def describe(path, ckpt, ema=False):  # the line under the page's notes
    rows = (ckpt.get("tracker") or {}).get("rows") or []
    key = "ema_test_top1" if ema else "test_top1"
    text = f"Checkpoint `{Path(path).name}`" + (" (EMA weights)" if ema else "")
    if ckpt.get("epoch"):
        text += f", epoch {ckpt['epoch']}, trained on {dataset_of(ckpt)}"
    if rows and key in rows[-1] and not ckpt.get("step"):  # the epoch whose weights these are
        shrunk = ckpt.get("args", {}).get("test_subset")
        text += (f" ({rows[-1][key]:.1f}% test top-1 at that epoch"
                 + (f", on {shrunk} test images)" if shrunk else ")"))
    synthetic = "; *synthetic patterns, not photos: its answers on a photo mean nothing*"
    return text + (synthetic if dataset_of(ckpt) == "synthetic" else "") + "."


def main(args):
    if importlib.util.find_spec("gradio") is None:  # said first, but imported (2 s) last
        raise SystemExit(NO_GRADIO)
    try:
        device = runtime.pick_device(args.device)
        ckpt = load_checkpoint(args.checkpoint)
        model = load_model(ckpt, FACTORY, args.checkpoint, args.ema, ARGS_OF_STATE, device)
        layer = find_layer(model, auto_layer(model) if args.layer == "auto" else args.layer)
        names = class_names(dataset_of(ckpt))
        stats = stats_of(ckpt, (CIFAR100_MEAN, CIFAR100_STD))
        classify = classifier(model, layer, device, names, stats)
        if EXAMPLES:
            classify(EXAMPLES[0])  # warm-up, and a bad --layer fails here, before serving
    except (CheckpointError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    gr = import_gradio()
    demo = build_page(gr, classify, describe(args.checkpoint, ckpt, args.ema), names[0])
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS,
                    ssr_mode=False, mcp_server=False, max_file_size="100mb",
                    footer_links=["api"])
    except OSError as e:  # the port is taken, or the host is not this machine's
        raise SystemExit(f"error: cannot serve on {args.host}:{args.port} "
                         f"({str(e).split('. ')[0]}); pick another --port or --host") from None


if __name__ == "__main__":
    main(build_parser().parse_args())
