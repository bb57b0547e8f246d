"""common/augment.py and common/loader.py: the batched augmentation and the loader."""
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from common import augment, data
from common.loader import Loader

NORM = augment.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD)


def A(**kwargs):
    return augment.Augment(NORM, **kwargs)


def test_augment_identity_crop_and_flip_are_exact():
    x, _ = data.synthetic_cifar100(64, 3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.allclose(A(pad=0, flip=False)(x, g()), NORM(x), atol=1e-5)
    plain = NORM(torch.nn.functional.pad(x, (4, 4, 4, 4)).float().to(torch.uint8))
    out = A(pad=4, flip=True)(x, g())
    shifts = set()
    for i in range(len(x)):  # each image is one integer crop of the padded image, maybe flipped
        windows = {(dy, dx): plain[i, :, dy:dy + 32, dx:dx + 32]
                   for dy in range(9) for dx in range(9)}
        hits = [(k, fl) for k, w in windows.items() for fl in (False, True)
                if torch.allclose(out[i], w.flip(-1) if fl else w, atol=1e-4)]
        assert hits, f"image {i} is not a crop of the padded original"
        shifts.add(hits[0])
    assert len(shifts) > 10  # parameters are drawn per image


def test_augment_masks_and_noise_hit_their_share():
    x, _ = data.synthetic_cifar100(400, 3)
    g = torch.Generator().manual_seed(0)
    erased = (A(pad=0, flip=False, erase_p=0.5)(x, g) == 0).all(1).flatten(1).any(1)
    assert 0.35 < erased.float().mean() < 0.65
    aug = A(pad=0, flip=False, holes_p=0.3, noise_p=0.3, holes=2, hole_size=(8, 8))
    out, clean = aug(x, torch.Generator().manual_seed(1)), NORM(x)
    holed = (out == 0).all(1).flatten(1).sum(1) >= 16
    changed = ~torch.isclose(out, clean, atol=1e-4).flatten(1).all(1)
    assert 0.2 < holed.float().mean() < 0.4 and 0.45 < changed.float().mean() < 0.75


def test_loader_replays_an_epoch_from_any_batch():
    split = data.synthetic_cifar100(200, 4)
    loader = Loader(split, 32, "cpu", A(rotate=15, erase_p=0.5), shuffle=True,
                    seed=7, drop_last=True)
    loader.set_epoch(3)
    full = list(loader)
    assert len(full) == 6 and all(xb.shape == (32, 3, 32, 32) for xb, _ in full)
    tail = list(loader.iterate(start=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[4:], tail))
    loader.set_epoch(4)
    assert not torch.equal(next(iter(loader))[1], full[0][1])
    with pytest.raises(ValueError, match="lower --batch-size"):
        Loader(split, 500, "cpu", NORM, shuffle=True, drop_last=True)
    with pytest.raises(ValueError, match="at least 1"):
        Loader(split, 0, "cpu", NORM)
    with pytest.raises(data.DataError, match="--subset -5"):
        data.load_splits("synthetic", None, subset=-5)


# ---- each op against its torchvision.transforms.v2 namesake, on the same images ---------------
RAW = augment.Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # outputs stay pixels in [0, 1]


def ks(a, b):
    """Two-sample Kolmogorov-Smirnov distance. For two samples of n from one distribution it
    exceeds 1.95 sqrt(2 / n) with probability 0.1 %: 0.12 at n = 500, 0.09 at n = 1000."""
    a, b = a.double().sort().values, b.double().sort().values
    at = torch.cat([a, b])
    return (torch.searchsorted(a, at, right=True) / len(a)
            - torch.searchsorted(b, at, right=True) / len(b)).abs().max().item()


def one_image(seed=0):
    return torch.randint(1, 256, (3, 32, 32), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_crop_offsets_and_flip_rate_match_torchvision():
    n, img = 1000, one_image()
    padded = torch.nn.functional.pad(img.float() / 255, (4, 4, 4, 4))
    windows = torch.stack([w.flip(-1) if fl else w for dy in range(9) for dx in range(9)
                           for w in [padded[:, dy:dy + 32, dx:dx + 32]] for fl in (0, 1)])

    def offsets_and_flips(out):  # each output is exactly one window, maybe mirrored
        k = torch.cdist(out.flatten(1), windows.flatten(1)).argmin(1)
        assert (out - windows[k]).abs().max() < 1e-4
        return k // 18, k // 2 % 9, k % 2  # row offset, column offset (0..8 px), flipped

    ours = offsets_and_flips(augment.Augment(RAW, pad=4, flip=True)(
        img.expand(n, 3, 32, 32), torch.Generator().manual_seed(1)))
    tv = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    torch.manual_seed(1)
    theirs = offsets_and_flips(torch.stack([tv(img) for _ in range(n)]).float() / 255)
    for o, t in zip(ours[:2], theirs[:2]):
        for counts in (torch.bincount(o, minlength=9), torch.bincount(t, minlength=9)):
            chi2 = ((counts - n / 9) ** 2 / (n / 9)).sum().item()
            assert len(counts) == 9 and chi2 < 26.1, counts  # uniform over 0..8: 0.1 % level
    for flips in (ours[2], theirs[2]):
        assert abs(flips.float().mean().item() - 0.5) < 0.05  # 3 sigma at n = 1000


def moments(x):
    """(N,3,H,W) -> long-axis angle (deg), sqrt of the second-moment trace (px), centroid x (px)."""
    m = x.float().mean(1)
    m = m / m.sum((1, 2), keepdim=True)
    c = torch.arange(m.shape[-1], dtype=torch.float) - (m.shape[-1] - 1) / 2
    cx, cy = (m * c).sum((1, 2)), (m * c[:, None]).sum((1, 2))
    u, v = c - cx[:, None, None], c[:, None] - cy[:, None, None]
    suu, svv, suv = (m * u * u).sum((1, 2)), (m * v * v).sum((1, 2)), (m * u * v).sum((1, 2))
    return torch.rad2deg(0.5 * torch.atan2(2 * suv, suu - svv)), (suu + svv).sqrt(), cx


def test_rotation_zoom_and_shift_match_torchvision():
    # an elongated Gaussian blob at the centre: its moments give angle, size and position
    n, c = 600, torch.arange(32.0) - 15.5
    blob = torch.exp(-c ** 2 / (2 * 4.0 ** 2) - c[:, None] ** 2 / (2 * 1.5 ** 2))
    img = (255 * blob).round().to(torch.uint8).expand(3, 32, 32)
    aug = augment.Augment(RAW, pad=0, flip=False, rotate=15, scale=(0.85, 1.15), translate=0.1)
    ours = moments(aug(img.expand(n, 3, 32, 32), torch.Generator().manual_seed(2)))
    tv = v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.85, 1.15),
                         interpolation=v2.InterpolationMode.BILINEAR)
    torch.manual_seed(2)
    theirs = moments(torch.stack([tv(img) for _ in range(n)]))
    size = moments(img[None])[1]
    for angle in (ours[0], theirs[0]):  # uniform in +-15 degrees
        assert 14 < angle.abs().max() < 15.5 and abs(angle.std().item() - 15 / 3 ** 0.5) < 0.6
    assert ks(ours[0], theirs[0]) < 0.1
    assert ks(ours[1] / size, theirs[1] / size) < 0.1  # zoom, uniform in 0.85..1.15
    # torchvision shifts by whole pixels (round(U(-3.2, 3.2))); ours by any fraction of one
    assert ks(ours[2].round(), theirs[2].round()) < 0.1
    assert ours[2].abs().max() < 3.3 and theirs[2].abs().max() < 3.3


def test_erased_area_and_aspect_match_torchvision():
    n = 2000
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(3),
                      dtype=torch.uint8)
    norm = augment.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # no pixel normalizes to 0
    ours = (augment.Augment(norm, pad=0, flip=False, erase_p=0.5)(
        x, torch.Generator().manual_seed(3)) == 0).all(1)
    er = v2.RandomErasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)
    torch.manual_seed(3)
    theirs = torch.stack([(er(norm(x[i:i + 1])[0]) == 0).all(0) for i in range(n)])
    stats = []
    for hit in (ours, theirs):
        erased = hit.flatten(1).any(1)
        assert abs(erased.float().mean().item() - 0.5) < 0.035  # 3 sigma at n = 2000
        hit = hit[erased]
        rows, cols = hit.any(2).sum(1), hit.any(1).sum(1)
        assert torch.equal(hit.flatten(1).sum(1), rows * cols)  # one solid box
        # a box of h x w px covers h and w rounded either way: ranges (0.02, 0.33), (0.3, 3.3)
        assert ((rows + 1) * (cols + 1) > 0.02 * 1024).all()
        assert ((rows - 1) * (cols - 1) < 0.33 * 1024).all()
        assert ((rows + 1) / (cols - 1).clamp(min=0.1) > 0.3).all()
        assert ((rows - 1) / (cols + 1) < 3.3).all()
        stats.append((rows * cols / 1024, (rows / cols).log()))
    assert ks(stats[0][0], stats[1][0]) < 0.1 and ks(stats[0][1], stats[1][1]) < 0.1


def test_color_jitter_is_torchvisions_at_the_same_factors():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    u = torch.rand(4, 16, generator=torch.Generator().manual_seed(5))  # the four draws
    draws = iter(u)
    wide = augment.Augment(RAW, jitter=(0.5, 0.5, 0.5, 0.5))  # wide enough to hit the clamps
    out = wide._jitter(x, lambda *shape: next(draws))
    b, c, s, h = (1 + (2 * u[:3] - 1) * 0.5).tolist() + [((2 * u[3] - 1) * 0.5).tolist()]
    for i in range(len(x)):  # ours runs brightness, contrast, saturation, hue in this order
        ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(
            TF.adjust_brightness(x[i], b[i]), c[i]), s[i]), h[i])
        assert torch.allclose(out[i], ref, atol=1e-5), i


def test_color_jitter_factors_span_torchvisions_ranges():
    # two flat halves whose change reveals each factor; none of them reaches 0 or 1
    n = 500
    img = torch.empty(3, 32, 32, dtype=torch.uint8)
    img[:, :, :16] = torch.tensor([150, 100, 80])[:, None, None]
    img[:, :, 16:] = torch.tensor([80, 120, 110])[:, None, None]
    red = torch.tensor([200, 20, 20], dtype=torch.uint8)[:, None, None].expand(3, 32, 32)

    def factors(out, which):
        if which == 0:  # brightness: x * f
            return out.mean((1, 2, 3)) / (img.float() / 255).mean()
        if which == 3:  # hue: HSV angle of the red (red stays the largest channel), degrees
            r, g, b = out[:, :, 0, 0].T
            return 60 * (g - b) / (r - torch.minimum(g, b))
        if which == 1:  # contrast blends with the image's mean grey: the halves part by c
            d = lambda v: v[:, 0, 0, 0] - v[:, 0, 0, 31]  # noqa: E731
        else:  # saturation blends with each pixel's grey: its channels part by s
            d = lambda v: v[:, 0, 0, 0] - v[:, 1, 0, 0]  # noqa: E731
        return d(out) / d(img[None].float() / 255)

    # the recipes' jitter; hue 0.05 turns by 18 degrees at most (the YIQ turn it replaced: 28)
    for which, m, bound in ((0, 0.2, 0.2), (1, 0.2, 0.2), (2, 0.2, 0.2), (3, 0.05, 18.0)):
        src = red if which == 3 else img
        jitter = [0.0] * 4
        jitter[which] = m
        ours = factors(augment.Augment(RAW, pad=0, flip=False, jitter=tuple(jitter))(
            src.expand(n, 3, 32, 32), torch.Generator().manual_seed(6)), which)
        cj = v2.ColorJitter(*jitter)
        torch.manual_seed(6)
        theirs = factors(torch.stack([cj(src.float() / 255) for _ in range(n)]), which)
        centre = 0.0 if which == 3 else 1.0
        for f in (ours, theirs):  # uniform over centre +- bound, the edges reached
            assert (f - centre).abs().max() <= bound * 1.01 + 1e-4, (which, f.min(), f.max())
            assert (f - centre).abs().max() > bound * 0.97, (which, f.min(), f.max())
        assert ks(ours, theirs) < 0.1, which


@pytest.mark.slow
def test_compiled_augment_agrees_with_eager():
    x, _ = data.synthetic_cifar100(64, 3)
    aug = A(rotate=15, jitter=(0.2, 0.2, 0.2, 0.05), erase_p=0.5)  # resnet18's recipe
    eager = aug(x, torch.Generator().manual_seed(0))
    aug.compile()
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), eager, atol=1e-4)


def test_compiled_augment_is_traced_once():
    """The normalization's per-device constants are fetched outside the compiled function:
    filled inside it, the cache changed between the first and the second call, and the second
    call traced (and, with inductor, compiled) a second graph."""
    from torch._dynamo.testing import CompileCounter
    torch._dynamo.reset()
    x, _ = data.synthetic_cifar100(16, 3)
    counter = CompileCounter()  # counts the graphs, runs them eagerly: no compiler needed
    aug = augment.Augment(augment.Normalize(data.CIFAR100_MEAN, data.CIFAR100_STD),
                          rotate=15, erase_p=0.5).compile(backend=counter)
    for seed in range(3):
        aug(x, torch.Generator().manual_seed(seed))
    assert counter.frame_count == 1
