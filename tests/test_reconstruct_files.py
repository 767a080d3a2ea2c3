"""issue 17: reconstruct's results are never lost or mixed (unique folders, whole-or-nothing folders, --overwrite,
concurrent writers), any per-photo failure is reported by name, and rotated photos are fitted upright."""
import json, os, shutil, struct, subprocess, sys, zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from headbook.cli import main
from headbook.fit import FitConfig, reconstruct
from headbook.models import load_head_model

pytest.importorskip("mediapipe")
GRACE = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
# the smallest fit that still lands on grace_hopper (NME ~0.1); the tests here are about files and orientation
TINY = FitConfig(rigid_iters=10, full_iters=8, lr=0.01, lr_light=0.02, lr_camera=0.002, raster_every=4,
                 progress=False)
RESULT = ["fit.json", "mesh.obj", "overlay.png", "params.npz", "viewer.html"]


@pytest.fixture(scope="module")
def head():
    return load_head_model("synthhead")


def png_bomb(path: Path, w: int = 20000, h: int = 10000) -> Path:
    "A valid 1-bit PNG of w x h black pixels: ~25 KB on disk, 200 megapixels decoded (PIL's DecompressionBombError)."
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = zlib.compress(b"\0" * ((w + 7) // 8 + 1) * h, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_name_collision_bomb_and_overwrite(tmp_path, head):
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    a = tmp_path / "a" / "grace_hopper.jpg"; shutil.copy(GRACE, a)
    b = tmp_path / "b" / "grace_hopper.png"
    Image.open(GRACE).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(b)        # another photo, the same stem
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100_000
    out = tmp_path / "out"
    res = reconstruct([a, bomb, b], head, out, preset=TINY, progress=False)
    assert [r.ok for r in res] == [True, False, True]
    assert "bomb.png" in res[1].photo and "DecompressionBombError" in res[1].error
    assert res[0].out_dir == out / "grace_hopper" and res[2].out_dir == out / "grace_hopper-2"
    assert res[0].notes == [] and "grace_hopper-2" in res[2].notes[0]
    assert sorted(p.name for p in out.iterdir()) == ["grace_hopper", "grace_hopper-2"]   # no partial folders left
    for r in (res[0], res[2]):
        assert sorted(p.name for p in r.out_dir.iterdir()) == RESULT
        assert json.loads((r.out_dir / "fit.json").read_text())["photo"] == r.photo
        assert all(Path(f).parent == r.out_dir and Path(f).exists() for f in r.files.values())
    # an existing result folder is refused before anything runs ...
    before = (out / "grace_hopper" / "fit.json").read_text()
    with pytest.raises(FileExistsError, match="grace_hopper.*overwrite"):
        reconstruct([a], head, out, preset=TINY, progress=False)
    assert (out / "grace_hopper" / "fit.json").read_text() == before
    # ... and replaced with overwrite=True: the mirrored photo's result now sits in grace_hopper/
    res = reconstruct([b], head, out, preset=TINY, progress=False, overwrite=True)
    assert res[0].ok and json.loads((out / "grace_hopper" / "fit.json").read_text())["photo"] == str(b)
    assert sorted(p.name for p in out.iterdir()) == ["grace_hopper", "grace_hopper-2"]


def test_cli_bomb_beside_a_good_photo_and_existing_out(tmp_path, capsys):
    bomb = png_bomb(tmp_path / "huge.png")
    (tmp_path / "out" / "grace_hopper").mkdir(parents=True)
    rc = main(["reconstruct", str(GRACE), str(bomb), "--out", str(tmp_path / "out"), "--preset", "smoke"])
    err = capsys.readouterr().err
    assert rc == 2 and "grace_hopper: already exists" in err and "--overwrite" in err
    rc = main(["reconstruct", str(GRACE), str(bomb), "--out", str(tmp_path / "out"), "--preset", "smoke",
               "--overwrite"])
    out = capsys.readouterr().out
    assert rc == 1 and "huge.png: error: DecompressionBombError" in out
    assert sorted(p.name for p in (tmp_path / "out" / "grace_hopper").iterdir()) == RESULT


WRITER = """
import sys, time
from pathlib import Path
import importlib
R = importlib.import_module("headbook.fit.reconstruct")   # the module (headbook.fit.reconstruct is the function)
photo, out, barrier, n, overwrite = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
write = R._write
def slow_write(*a, **k):
    # both processes start writing at the same moment; process 0 is slow on its last file (fit.json), process 1 on
    # its first (mesh.obj): written into one folder, the files would interleave (fit.json of one photo, the rest of
    # the other)
    (barrier / n).touch()
    while len(list(barrier.iterdir())) < 2: time.sleep(0.01)
    import headbook.geometry.mesh as M
    if n == "0":
        dumps = R.json.dumps
        R.json.dumps = lambda *a, **k: (time.sleep(1.5), dumps(*a, **k))[1]
    else:
        save = M.save_mesh
        M.save_mesh = lambda *a, **k: (time.sleep(0.5), save(*a, **k))[1]
    return write(*a, **k)
R._write = slow_write
cfg = R.FitConfig(rigid_iters=2, full_iters=2, raster_every=4, progress=False)
res = R.reconstruct([photo], "synthhead", out, preset=cfg, progress=False, overwrite=overwrite)
print(res[0].ok, res[0].error)
sys.exit(0 if res[0].ok else 1)
"""


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_processes_writing_one_name(tmp_path, overwrite):
    (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
    a = tmp_path / "a" / "face.jpg"; shutil.copy(GRACE, a)
    b = tmp_path / "b" / "face.png"
    im = Image.open(GRACE); wide = Image.new("RGB", (im.width + 100, im.height), (128, 128, 128))
    wide.paste(im, (100, 0)); wide.save(b)                  # a different photo: 100 px wider, the face shifted
    out, barrier = tmp_path / "out", tmp_path / "barrier"; barrier.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    args = [str(out), str(barrier)]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(p), *args, str(i), str(int(overwrite))], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, p in enumerate((a, b))]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == ([0, 0] if overwrite else [0, 1]), outs
    if not overwrite:
        assert any("appeared while this photo was fitted" in o for o, _ in outs), outs
    assert sorted(p.name for p in out.iterdir()) == ["face"]                       # no partial or old folders left
    d = out / "face"
    assert sorted(p.name for p in d.iterdir()) == RESULT
    info = json.loads((d / "fit.json").read_text())
    W = info["image_size"][1]
    assert info["photo"] == str(a if W == im.width else b)
    assert Image.open(d / "overlay.png").size == (3 * W, info["image_size"][0])  # the overlay of the same photo
    p = np.load(d / "params.npz")
    assert p["crop_x0"] == pytest.approx(info["crop"]["x0"]) and p["crop_scale"] == pytest.approx(info["crop"]["scale"])


def test_rotated_photos_are_fitted_upright(tmp_path, head):
    up = tmp_path / "upright.png"; Image.open(GRACE).save(up)
    side = tmp_path / "sideways.png"; Image.open(GRACE).transpose(Image.Transpose.ROTATE_90).save(side)
    exif = tmp_path / "phone.jpg"          # pixels stored on their side + Orientation 6 ("turn 90° clockwise")
    tag = Image.Exif(); tag[0x0112] = 6
    Image.open(GRACE).transpose(Image.Transpose.ROTATE_90).save(exif, exif=tag, quality=95)
    res = reconstruct([up, side, exif], head, tmp_path / "out", preset=TINY, progress=False)
    assert all(r.ok for r in res), [r.error for r in res]
    assert [r.rotation for r in res] == [0, 270, 0]
    assert "turned 270°" in res[1].notes[0]
    assert json.loads((res[1].out_dir / "fit.json").read_text())["rotation_deg"] == 270
    nme = [r.nme for r in res]
    assert nme[0] < 0.2 and nme[1] < 1.5 * nme[0] and nme[2] < 1.5 * nme[0], nme
