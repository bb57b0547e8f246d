"""resnet18/app.py, the web demo: started on a free local port and called as a real client would
(gradio_client); its numbers are evaluate.py --image's; bad files get a message and the server
goes on; a bad checkpoint or a missing gradio stops it with one line before it serves. Where
Chromium is installed, the page itself is driven in a headless browser.

    APP_SCREENSHOT=resnet18/app_screenshot.png python -m pytest tests/test_app.py -k chromium

APP_CHECKPOINT=path/last.pt serves that checkpoint instead of the tiny one the tests train (the
README's screenshot: the try-it run of resnet18/README.md). A checkpoint of the synthetic set
names its classes as that set does ("disk on h-stripes 5px"), in the page and in evaluate.py.
"""
import base64
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from PIL import Image, ImageDraw

from common.augment import Normalize
from common.checkpoint import load_checkpoint
from common.data import CIFAR100_MEAN, CIFAR100_STD, FINE_NAMES, FINE_TO_COARSE, class_names
from common.inference import load_model, predict, read_image, stats_of
from conftest import REPO, load_module

pytest.importorskip("gradio", reason="the web demo needs: pip install -r requirements-demo.txt")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

APP = REPO / "resnet18" / "app.py"
EXAMPLE = REPO / "resnet18" / "examples" / "apple.png"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def ckpt(request):
    if os.environ.get("APP_CHECKPOINT"):
        return os.environ["APP_CHECKPOINT"]
    return request.getfixturevalue("resnet18_run") / "last.pt"  # the session's tiny run


@pytest.fixture(scope="module")
def server(ckpt):
    """The app in its own process on a free port of 127.0.0.1; stopped after the module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, str(APP), "--checkpoint", str(ckpt), "--port",
                          str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines, up = [], threading.Event()

    def drain():  # keeps the pipe empty for the server's whole life
        for line in p.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                up.set()
        up.set()  # it ended
    threading.Thread(target=drain, daemon=True).start()
    try:
        up.wait(120)
        assert p.poll() is None and any("Running on" in ln for ln in lines), "".join(lines)
        url = f"http://127.0.0.1:{port}/"
        yield url, Client(url, verbose=False, download_files=False)
    finally:
        p.terminate()
        p.wait(30)
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def top5_of(result):
    """The Label's payload -> [(percent as evaluate.py prints it, class)], best first."""
    return [(f"{100 * torch.tensor(c['confidence']):6.2f}%", c["label"])  # float32, as there
            for c in result[0]["confidences"]]


def odd_images(d):
    """An RGBA with transparent parts, a greyscale and a palette image, none of them square."""
    g = torch.Generator().manual_seed(0)
    rgba = torch.randint(0, 256, (70, 50, 4), dtype=torch.uint8, generator=g).numpy()
    rgba[:20, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    grey = torch.randint(0, 256, (40, 48), dtype=torch.uint8, generator=g).numpy()
    Image.fromarray(grey, "L").save(d / "grey.png")
    Image.open(EXAMPLE).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).resize(
        (45, 33)).save(d / "palette.gif")
    return [EXAMPLE, d / "rgba.png", d / "grey.png", d / "palette.gif"]


def names_of(ckpt):
    """(fine, superclass names) of the checkpoint's dataset, as the app and evaluate.py use."""
    c = load_checkpoint(ckpt)
    return class_names(c["args"].get("dataset") or c.get("dataset") or "cifar100")


@pytest.mark.slow  # the live server: python -m pytest -m slow
def test_top5_is_evaluate_image_for_any_image(server, ckpt, tmp_path):
    """Each file's top-5 as evaluate.py --image prints it: its process for the palette image,
    its functions (read_image, predict) in this process for all four; a synthetic-set checkpoint
    (the session's) names the classes and superclass as that set does."""
    url, client = server
    files = odd_images(tmp_path)
    cli = {f: subprocess.Popen([sys.executable, "resnet18/evaluate.py", "--checkpoint", str(ckpt),
                                "--device", "cpu", "--image", str(f)], cwd=REPO, text=True,
                               stdout=subprocess.PIPE) for f in files[-1:]}  # while we ask
    model = load_model(load_checkpoint(ckpt), load_module(REPO / "resnet18" / "model.py",
                                                          "r18_app").resnet18, ckpt)
    fine, coarse = names_of(ckpt)
    normalize = Normalize(*stats_of(load_checkpoint(ckpt), (CIFAR100_MEAN, CIFAR100_STD)))
    if not os.environ.get("APP_CHECKPOINT"):  # the session's run is on the synthetic set
        assert fine == class_names("synthetic")[0]
    for f in files:
        result = client.predict(handle_file(str(f)), api_name="/predict")
        p = predict(model, read_image(f)[None], normalize, torch.device("cpu"))[0]
        printed = [(f"{100 * q:6.2f}%", fine[c]) for q, c in zip(*p.topk(5))]
        assert top5_of(result) == printed, f.name
        if f in cli:
            out = cli[f].communicate(timeout=120)[0]
            assert cli[f].returncode == 0 and out.splitlines()[1:] == [
                f"  {a}  {b}" for a, b in printed], out
        top = fine.index(result[0]["label"])
        assert result[1].startswith(coarse[FINE_TO_COARSE[top]] + ": its 5 classes")
        for image in result[2:]:  # the 32x32 input and its Grad-CAM, nearest-upscaled 8x
            assert Image.open(image["path"]).size == (256, 256)


@pytest.mark.slow  # the live server: python -m pytest -m slow
def test_bad_files_get_a_message_and_the_server_goes_on(server, tmp_path):
    url, client = server
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("1", (8000, 8000)).save(tmp_path / "huge.png")  # 64 MP, 8 kB on disk
    for name, message in [("notes.png", "cannot read notes.png as an image"),
                          ("empty.png", "empty.png is empty"),
                          ("huge.png", "huge.png is a 8000x8000 PNG")]:
        t = time.perf_counter()
        with pytest.raises(AppError, match=message) as e:
            client.predict(handle_file(str(tmp_path / name)), api_name="/predict")
        assert str(tmp_path) not in str(e.value) and time.perf_counter() - t < 10
        assert len(top5_of(client.predict(handle_file(str(EXAMPLE)), api_name="/predict"))) == 5


def test_bad_checkpoints_and_no_gradio_stop_before_serving(ckpt, tmp_path):
    foreign = torch.load(ckpt, weights_only=True)
    foreign["arch"] = "resnet34"
    torch.save(foreign, tmp_path / "foreign.pt")
    (tmp_path / "no_gradio" / "gradio").mkdir(parents=True)
    (tmp_path / "no_gradio" / "gradio" / "__init__.py").write_text("raise ImportError('gone')")
    shutil.copytree(REPO / "common", tmp_path / "common")  # a copied folder, as an assignment
    shutil.copytree(REPO / "resnet18", tmp_path / "my_net",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cases = [  # (command, extra environment, what the one line says)
        ([APP, "--checkpoint", tmp_path / "foreign.pt"], {}, "holds a 'resnet34' model"),
        ([APP, "--checkpoint", ckpt], {"PYTHONPATH": str(tmp_path / "no_gradio")},
         "pip install -r requirements-demo.txt"),
        ([tmp_path / "my_net" / "app.py"], {},  # its default: its own run dir, not there
         f"no checkpoint at {tmp_path / 'runs' / 'my_net' / 'last.pt'}"),
    ]
    procs = [subprocess.Popen([sys.executable, *map(str, cmd), "--port", "1"], cwd=tmp_path,
                              env={**os.environ, **env}, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for cmd, env, _ in cases]
    for (cmd, _, message), p in zip(cases, procs):  # --port 1: it would fail to serve anyway
        out, err = p.communicate(timeout=120)
        assert p.returncode != 0 and "Running on" not in out, (cmd, out, err)
        assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_gradio_stays_inside_app_py():
    users = [str(p.relative_to(REPO)) for p in REPO.glob("*/*.py") if p.parent.name != "tests"
             and ("import gradio" in p.read_text() or "from gradio" in p.read_text())]
    assert users == ["resnet18/app.py"]
    assert "-r requirements-demo.txt" in (REPO / "requirements-dev.txt").read_text()


# ----------------------------------------------------------------------------- a real browser
class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
    it reads commands on fd 3 and answers on fd 4), so no websocket library is needed."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--remote-debugging-pipe"]

    def __init__(self, profile, width=1280, height=860):
        to_it, self.from_it = os.pipe(), os.pipe()

        def on_fds_3_and_4():
            r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_it[0], self.from_it[1]))
            os.dup2(r, 3), os.dup2(w, 4)
        self.proc = subprocess.Popen([CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], preexec_fn=on_fds_3_and_4, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_it[0]), os.close(self.from_it[1])
        self.to_it, self.buf, self.n, self.session = to_it[1], b"", 0, None
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def send(self, method, timeout=60, **params):
        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        os.write(self.to_it, json.dumps({**msg, "sessionId": self.session} if self.session
                                        else msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" not in self.buf:
                if not select.select([self.from_it[0]], [], [], max(0, end - time.monotonic()))[0]:
                    raise TimeoutError(method)
                self.buf += os.read(self.from_it[0], 1 << 20) or b"<closed>\0"
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.n:
                assert "error" not in reply, (method, reply)
                return reply["result"]

    def js(self, expression):
        return self.send("Runtime.evaluate", expression=expression,
                         returnByValue=True)["result"].get("value")

    def wait_for(self, expression, timeout=60):
        end = time.monotonic() + timeout
        while not self.js(expression):
            assert time.monotonic() < end, f"timed out waiting for {expression}"
            time.sleep(0.2)
        return self.js(expression)

    def upload(self, selector, path):
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(path)])

    def screenshot(self, path):
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot")["data"]))

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium package")
def test_page_in_headless_chromium(server, ckpt, tmp_path):
    """A person's visit: a text file (the page says why it is no image), a click on an example,
    then a drawn picture wider than tall, then another example; the page shows what the client
    gets. An example's button shows its label's name in the checkpoint's dataset."""
    url, client = server
    fine = names_of(ckpt)[0]
    (tmp_path / "notes.png").write_text("not an image")
    scene = Image.new("RGB", (480, 320), (110, 170, 230))  # sky; the network sees 320x320
    draw = ImageDraw.Draw(scene)
    draw.rectangle([0, 220, 480, 320], fill=(70, 140, 60))
    draw.rectangle([40, 120, 60, 230], fill=(100, 60, 30))
    draw.ellipse([0, 60, 100, 150], fill=(40, 110, 40))  # a tree, left of the centre square
    draw.ellipse([195, 110, 285, 200], fill=(250, 170, 30))
    scene.save(tmp_path / "scene.jpg", quality=95)
    browser = Chromium(tmp_path / "profile")
    try:
        browser.send("Page.navigate", url=url)
        browser.wait_for("!!document.querySelector('#input input[type=file]')")
        browser.upload("#input input[type=file]", tmp_path / "notes.png")
        assert "cannot read notes.png as an image" in browser.wait_for(
            "[...document.querySelectorAll('[data-testid=toast-text]')].map(e => e.innerText)"
            ".join(' ')")
        browser.js("document.querySelectorAll('[data-testid=toast-close]')"
                   ".forEach(b => b.click())")
        last = REPO / "resnet18" / "examples" / "rose.png"
        for path, show in ((EXAMPLE, "example"), (tmp_path / "scene.jpg", "upload"),
                           (last, "example")):  # each waits for its own 32x32 image
            seen = json.dumps(browser.js("document.querySelector('#seen img')?.src || ''"))
            if show == "upload":
                browser.upload("#input input[type=file]", path)
            else:
                label = json.dumps(fine[FINE_NAMES.index(path.stem)])
                browser.js(f"[...document.querySelectorAll('#examples button')]"
                           f".find(b => b.innerText.trim() == {label}).click()")
            browser.wait_for(f"(document.querySelector('#seen img')?.src || '') != {seen}")
            expected = client.predict(handle_file(str(path)), api_name="/predict")
            browser.wait_for(f"document.querySelector('#superclass textarea')?.value == "
                             f"{json.dumps(expected[1])}")
            assert browser.js("document.querySelector('#top5 h2').innerText").strip() == \
                expected[0]["label"]
        browser.wait_for("[...document.querySelectorAll('#seen img, #cam img')]"
                         ".filter(i => i.complete && i.naturalWidth == 256).length == 2")
        browser.screenshot(tmp_path / "page.png")
    finally:
        browser.close()
    if os.environ.get("APP_SCREENSHOT"):
        shutil.copy(tmp_path / "page.png", REPO / os.environ["APP_SCREENSHOT"])
