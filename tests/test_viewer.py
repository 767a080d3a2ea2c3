"""Every k3d viewer opens facing the face (+Z towards the camera, +Y up) with the head filling most of the view,
checked on a headless-browser screenshot (Debian's chromium; CI installs it, see .ci/run)."""
import json, os, re, shutil, subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
W, H = 800, 600
if CHROMIUM is None:
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError("chromium is missing: .ci/run installs it (apt-get install -y chromium) before make test")
    pytest.skip("no chromium here (apt-get install -y chromium); CI installs it and runs these tests",
                allow_module_level=True)


def _cdp_session(args):
    "Chromium with the DevTools protocol on a pipe (fds 3, 4 in the child): (process, send(method, **params) -> result)."
    r_cmd, w_cmd = os.pipe(); r_out, w_out = os.pipe()

    def child_fds():
        a, b = os.dup(r_cmd), os.dup(w_out)
        os.dup2(a, 3); os.dup2(b, 4)

    proc = subprocess.Popen([CHROMIUM, *args, "--remote-debugging-pipe", "about:blank"], preexec_fn=child_fds,
                            close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(r_cmd); os.close(w_out)
    wf, rf = os.fdopen(w_cmd, "wb"), os.fdopen(r_out, "rb")
    state = dict(id=0, buf=b"")

    def send(method, session=None, **params):
        state["id"] += 1
        msg = dict(id=state["id"], method=method, params=params, **({"sessionId": session} if session else {}))
        wf.write(json.dumps(msg).encode() + b"\0"); wf.flush()
        while True:
            while b"\0" not in state["buf"]:
                chunk = rf.read1(1 << 20)
                if not chunk: raise RuntimeError(f"chromium closed the DevTools pipe during {method}")
                state["buf"] += chunk
            raw, state["buf"] = state["buf"].split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == state["id"]:
                if "error" in reply: raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
    return proc, send


def screenshot(html_path: Path, tmp: Path, timeout_s: float = 60.0) -> np.ndarray:  # [H, W, 3] uint8
    """The page as Chromium draws it (software WebGL through SwiftShader, no network), once k3d has drawn: screenshots
    are taken until the head's pixels appear and two in a row are identical."""
    import base64, io, time
    args = ["--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
            f"--user-data-dir={tmp / 'chromium-profile'}", f"--window-size={W},{H}",
            "--host-resolver-rules=MAP * ~NOTFOUND"]          # no network: a page that needs a CDN draws nothing
    proc, send = _cdp_session(args)
    try:
        target = send("Target.createTarget", url="about:blank")["targetId"]
        s = send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        send("Emulation.setDeviceMetricsOverride", s, width=W, height=H, deviceScaleFactor=1, mobile=False)
        send("Page.enable", s)
        send("Page.navigate", s, url=html_path.resolve().as_uri())
        prev, t0 = None, time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            time.sleep(0.5)
            png = base64.b64decode(send("Page.captureScreenshot", s, format="png")["data"])
            img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            if prev is not None and head_mask(img).any() and np.array_equal(img, prev): return img
            prev = img
        return prev                      # never settled: the checks below report what was drawn
    finally:
        proc.kill(); proc.wait()


def head_mask(img: np.ndarray) -> np.ndarray:  # [H, W] bool
    "Pixels of the head: not the white background, outside k3d's menu (top right) and axes helper (bottom right)."
    m = (np.abs(img.astype(int) - 255).sum(-1) > 40)
    m[:110, int(0.7 * W):] = False
    m[int(0.8 * H):, int(0.88 * W):] = False
    return m


def front_view_report(img: np.ndarray) -> dict:
    "Size and place of the head's pixels, their left-right symmetry, and the eyes' dark pixels (seen only from the front)."
    m = head_mask(img)
    ys, xs = np.nonzero(m)
    if len(xs) == 0: return dict(height=0.0, width=0.0, centre_x=0.0, symmetry=0.0, dark_left=0, dark_right=0)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    box = m[y0:y1, x0:x1]
    sym = (box & box[:, ::-1]).sum() / max((box | box[:, ::-1]).sum(), 1)      # mask vs its mirror image (IoU)
    lum = img[y0:y1, x0:x1].astype(float).mean(-1)
    upper = np.zeros_like(box); upper[: (y1 - y0) // 2] = True                # the upper half of the head
    dark = box & upper & (lum < 70)                                           # pupils and irises
    mid = (x1 - x0) // 2
    return dict(height=(y1 - y0) / H, width=(x1 - x0) / W, centre_x=(x0 + x1) / 2 / W, symmetry=float(sym),
                dark_left=int(dark[:, :mid].sum()), dark_right=int(dark[:, mid:].sum()))


def assert_front_view(rep: dict):
    assert rep["height"] > 0.6, f"the head fills only {rep['height']:.0%} of the view's height: {rep}"
    assert rep["height"] > 1.1 * rep["width"] * W / H, f"the head is not upright (+Y up): {rep}"
    assert abs(rep["centre_x"] - 0.5) < 0.1, f"the head is not in the middle of the view: {rep}"
    assert rep["symmetry"] > 0.8, f"the silhouette is not left-right symmetric (not seen from the front): {rep}"
    assert rep["dark_left"] > 20 and rep["dark_right"] > 20, f"no eyes in the upper half (seen from behind?): {rep}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("viewer_shots")


def test_demo_viewer_faces_the_face(shots):
    from headbook.cli import demo
    paths = demo(shots / "demo")
    html = Path(paths["viewer"]).read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)        # k3d's JavaScript is inline: no CDN, offline
    assert not re.search(r"jsdelivr|unpkg|cdnjs", html, re.I)
    assert_front_view(front_view_report(screenshot(Path(paths["viewer"]), shots)))


def test_check_fails_on_k3d_default_camera(shots):
    "The check can fail: the same head with k3d's own default camera (z up, seen from below) is refused."
    import k3d
    from headbook.models import load_head_model
    m = load_head_model("synthhead")
    v = m().vertices[0].detach().numpy().astype(np.float32)
    plot = k3d.plot(grid_visible=False)
    plot += k3d.mesh(v, m.faces.numpy().astype(np.uint32), color=0xd0a080)
    p = shots / "k3d_default.html"; p.write_text(plot.get_snapshot())
    with pytest.raises(AssertionError):
        assert_front_view(front_view_report(screenshot(p, shots)))


def test_front_view_report_on_mirror_and_back():
    "The report's symmetry and eye checks on drawn pictures: a symmetric face passes, a lopsided or eyeless one fails."
    img = np.full((H, W, 3), 255, np.uint8)
    yy, xx = np.mgrid[:H, :W]
    head = ((xx - 400) / 180) ** 2 + ((yy - 300) / 260) ** 2 < 1
    img[head] = (200, 160, 130)
    for ex in (330, 470): img[((xx - ex) / 18) ** 2 + ((yy - 220) / 12) ** 2 < 1] = (20, 20, 20)
    assert_front_view(front_view_report(img))
    back = img.copy(); back[head] = (200, 160, 130)                   # the same head without eyes
    with pytest.raises(AssertionError, match="no eyes"):
        assert_front_view(front_view_report(back))
    side = img.copy(); side[:, 400:][head[:, 400:]] = 255             # half a head
    with pytest.raises(AssertionError):
        assert_front_view(front_view_report(side))
