"""reconstruct on photos with small, off-centre faces and on a group photo (data/photos, public domain): the largest
face by default, every face with all_faces; the overlay's middle panel shows the whole head, not the crop box; the
viewer it writes opens on the face."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headbook.cli import build_parser
from headbook.fit.reconstruct import reconstruct
from headbook.models.assets import data_path


@pytest.fixture(scope="module")
def all_faces(tmp_path_factory):
    out = tmp_path_factory.mktemp("recon")
    photos = [data_path("photos", "small_face.jpg"), data_path("photos", "group.jpg")]
    return out, reconstruct(photos, "synthhead", out, preset="smoke", progress=False, all_faces=True)


def test_all_faces_one_folder_per_face(all_faces):
    out, res = all_faces
    assert [r.ok for r in res] == [True, True, True], [r.error for r in res]
    assert sorted(p.name for p in out.iterdir()) == ["group_face0", "group_face1", "small_face_face0"]
    for r in res:
        names = {p.name for p in r.out_dir.iterdir()}
        assert {"mesh.obj", "params.npz", "overlay.png", "viewer.html", "fit.json"} <= names
        assert r.nme < 0.3, (r.photo, r.nme)
    boxes = [json.loads((out / n / "fit.json").read_text())["crop"] for n in ("group_face0", "group_face1")]
    assert abs(boxes[0]["x0"] - boxes[1]["x0"]) > 300           # two different people, not one face twice
    assert boxes[0]["scale"] < boxes[1]["scale"]                 # face0 is the larger face (a smaller crop scale)


def test_overlay_shows_whole_head_beyond_the_crop(all_faces):
    out, _ = all_faces
    d = out / "small_face_face0"
    info = json.loads((d / "fit.json").read_text())
    ov = np.asarray(Image.open(d / "overlay.png").convert("RGB")).astype(float)
    H, W = info["image_size"]
    photo, middle = ov[:, :W], ov[:, W:2 * W]
    drawn = np.abs(middle - 0.25 * photo).sum(-1) > 30           # pixels where the head is drawn
    c = info["crop"]; side = c["size"] / c["scale"]
    x0, y0 = int(np.floor(c["x0"])), int(np.floor(c["y0"]))
    ys, xs = np.nonzero(drawn)
    assert len(ys) > 0
    inside = (xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)
    assert (~inside).sum() > 0.05 * len(ys), "the render is clipped to the crop box"
    assert ys.min() < y0 - 0.1 * side, "the cranium above the crop box is not drawn"


def test_cli_all_faces_flag():
    a = build_parser().parse_args(["reconstruct", "x.jpg", "--all-faces"])
    assert a.all_faces is True and build_parser().parse_args(["reconstruct", "x.jpg"]).all_faces is False


def test_reconstruct_viewer_faces_the_face(all_faces, tmp_path):
    from test_viewer import screenshot, front_view_report, assert_front_view
    out, _ = all_faces
    assert_front_view(front_view_report(screenshot(out / "group_face0" / "viewer.html", tmp_path)))
