"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", arXiv:1610.02391).

The map of class c at a conv layer with activations A (B,K,h,w) is ReLU(sum_k w_k A_k), where
w_k = mean over (h,w) of d logit_c / d A_k: the channels that raise the class score, weighted
by where they fire. It is upsampled to the input size and min-max scaled per image.
"""
import re

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps


class GradCAM:
    """Grad-CAM on `layer` (a module or a name for find_layer); a context manager.

        with GradCAM(model, "layer4[-1]") as cam:
            maps, logits = cam(x)          # maps (B,H,W) in [0, 1]

    The forward hook keeps the layer's output; its gradient comes from torch.autograd.grad, so
    no backward hook is needed and the parameters' .grad stay untouched. close() (or leaving
    the `with` block) removes the hook.
    """

    def __init__(self, model, layer):
        self.model = model
        self.layer = find_layer(model, layer) if isinstance(layer, str) else layer
        self.acts = None
        self.handle = self.layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.acts = output

    def __call__(self, x, target=None):
        """x (B,3,H,W) normalized; target None (the predicted class), an int or (B,) labels."""
        modes = [m.training for m in self.model.modules()]
        self.model.eval()
        try:
            # grad enabled on the input, so the map exists even with every parameter frozen
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                logits = self.model(x)
                if target is None:
                    target = logits.argmax(1)
                target = torch.as_tensor(target, device=logits.device).long().expand(len(x))
                score = logits.gather(1, target[:, None]).sum()  # images are independent in eval
                if self.acts is None or self.acts.dim() != 4:
                    raise ValueError("Grad-CAM needs a layer with (B,K,h,w) maps in the forward "
                                     "pass, e.g. a conv or a residual block, not fc or pooling")
                grads, = torch.autograd.grad(score, self.acts)
        finally:
            for m, mode in zip(self.model.modules(), modes):
                m.training = mode
        acts, self.acts = self.acts.detach(), None
        weights = grads.mean((2, 3), keepdim=True)                 # (B, K, 1, 1)
        cam = F.relu((weights * acts).sum(1, keepdim=True))        # (B, 1, h, w)
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo = cam.amin((1, 2), keepdim=True)
        span = cam.amax((1, 2), keepdim=True) - lo
        cam = torch.where(span > 1e-12, (cam - lo) / span.clamp(min=1e-12), torch.zeros_like(cam))
        return cam.float(), logits.detach()

    def close(self):
        self.handle.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def gradcam_maps(model, layer, x, normalize, target=None, batch=100):
    """uint8 images (N,3,H,W) -> Grad-CAM maps (N,H,W) in [0, 1] on the CPU, `batch` at a time on
    the model's device. target: None (each image's predicted class) or labels (N,)."""
    device = next(model.parameters()).device
    maps = []
    with GradCAM(model, layer) as cam:
        for i in range(0, len(x), batch):
            t = None if target is None else target[i:i + batch].to(device)
            maps.append(cam(normalize(x[i:i + batch].to(device)), t)[0].cpu())
    return torch.cat(maps) if maps else torch.zeros(0, *x.shape[2:])


def pointing_game(maps, masks, correct):
    """How often the peak of each map lies on the object (Zhang et al. 2016, "Top-down Neural
    Attention by Excitation Backprop", arXiv:1608.00507): maps (N,H,W), masks bool (N,H,W) of
    the objects' pixels, correct bool (N,) -> {"hit", "hit_correct", "chance": %, "images"}.
    A blank map (no peak) is a miss; chance is the objects' mean share of the image."""
    flat = maps.flatten(1)
    hit = masks.flatten(1).gather(1, flat.argmax(1, keepdim=True))[:, 0] & (flat.amax(1) > 0)
    share = lambda h: 100 * h.float().mean().item() if len(h) else float("nan")  # noqa: E731
    return {"hit": share(hit), "hit_correct": share(hit[correct]),
            "chance": share(masks.flatten(1)), "images": len(hit)}


def find_layer(model, name):
    """The submodule called "layer4.1", "layer4[-1]" or "layer4.1.conv2" (negative indices ok)."""
    module, path = model, []
    for part in re.sub(r"\[(-?\d+)\]", r".\1", name).split("."):
        children = dict(module.named_children())
        if part in children:
            module = children[part]
        elif re.fullmatch(r"-?\d+", part) and -len(children) <= int(part) < len(children):
            module = list(children.values())[int(part)]
        else:
            where = f"'{'.'.join(path)}'" if path else type(model).__name__
            raise ValueError(f"no layer {name!r}: {where} has no {part!r}; it has: "
                             f"{', '.join(children) or 'no submodules'}")
        path.append(part)
    return module


def layer_name(model, layer):
    """The dotted name of a submodule, e.g. "layer4.1" for find_layer(model, "layer4[-1]")."""
    return next(n for n, m in model.named_modules() if m is layer)


def side_by_side(image, cam):
    """The plain image, a 2-px white gap, and its overlay: one (H, 2W+2, 3) float panel."""
    plain = np.asarray(image, dtype=np.float32).transpose(1, 2, 0) / 255
    return np.concatenate([plain, np.ones((len(plain), 2, 3)), overlay(image, cam)], axis=1)


def overlay(image, cam, alpha=0.45):
    """uint8 (3,H,W) image and (H,W) map in [0, 1] -> float (H,W,3) in [0, 1], jet colours."""
    img = np.asarray(image, dtype=np.float32).transpose(1, 2, 0) / 255
    heat = colormaps["jet"](np.asarray(cam, dtype=np.float32))[..., :3]
    return np.clip((1 - alpha) * img + alpha * heat, 0, 1)  # float32 rounding can pass 1
