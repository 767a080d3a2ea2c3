"Tests for headbook.models.synthhead: the built-in, generated head model."
import numpy as np
import pytest
import torch
import trimesh

from headbook.models import synthhead as S
from headbook.models.flame import FLAME, HeadModelData, validate_head_model_data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import os
    old = os.environ.get("HEADBOOK_CACHE")
    os.environ["HEADBOOK_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    S._MEMO.clear()
    d = S.build_synthhead()
    yield d
    if old is None: os.environ.pop("HEADBOOK_CACHE", None)
    else: os.environ["HEADBOOK_CACHE"] = old


@pytest.fixture(scope="module")
def flame(data): return FLAME(data)


def _names(data): return data.extras["expression_names"]


def _expr(flame, data, name, c):
    e = torch.zeros(1, len(_names(data))); e[0, _names(data).index(name)] = c
    return flame(expression=e).vertices[0].numpy()


def test_deterministic_and_disk_cache(data, tmp_path, monkeypatch):
    fresh = S._generate()                                     # no cache involved
    for k in S._ARRAYS: assert np.array_equal(getattr(fresh, k), getattr(data, k)), k
    monkeypatch.setenv("HEADBOOK_CACHE", str(tmp_path))
    S._MEMO.clear()
    S.build_synthhead()                                       # writes the cache
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith(S.SYNTHHEAD_VERSION)
    S._MEMO.clear()
    loaded = S.build_synthhead()                              # reads it back
    for k in S._ARRAYS: assert np.array_equal(getattr(loaded, k), getattr(data, k)), k
    assert loaded.extras["expression_names"] == data.extras["expression_names"]
    assert np.array_equal(loaded.extras["region_face"], data.extras["region_face"])
    files[0].write_bytes(b"not an npz")                       # corrupt cache: regenerated, not an error
    S._MEMO.clear()
    again = S.build_synthhead()
    assert np.array_equal(again.v_template, data.v_template)
    S._MEMO.clear()


def test_returns_independent_copies(data):
    a = S.build_synthhead(); a.v_template[:] = 0
    assert np.abs(S.build_synthhead().v_template).max() > 0.1


def test_validates_and_sizes(data):
    validate_head_model_data(data)
    assert isinstance(data, HeadModelData) and data.name == "synthhead"
    assert 4000 <= data.n_verts <= 6500 and 8000 <= len(data.faces) <= 12500
    assert data.shapedirs.shape[2] >= 50 and data.exprdirs.shape[2] >= 20
    assert data.eyelid_dirs.shape == (data.n_verts, 3, 2) and data.albedo_basis.shape[2] >= 10
    assert data.v_template.dtype == np.float32 and data.faces.dtype == np.int64
    w = np.ptp(data.v_template[data.extras["part"] == 0], 0)
    assert 0.145 < w[0] < 0.19 and 0.25 < w[1] < 0.30 and 0.17 < w[2] < 0.24


@pytest.mark.parametrize("B", [1, 8])
def test_forward(flame, data, B):
    g = torch.Generator().manual_seed(0)
    out = flame(shape=torch.randn(B, 60, generator=g), expression=torch.randn(B, len(_names(data)), generator=g) * 0.5,
                jaw_pose=torch.tensor([[0.1, 0, 0]]).expand(B, 3), eyelids=torch.rand(B, 2, generator=g),
                global_pose=torch.randn(B, 3, generator=g) * 0.1)
    assert out.vertices.shape == (B, data.n_verts, 3) and out.landmarks.shape == (B, 68, 3) and out.joints.shape == (B, 5, 3)
    assert torch.isfinite(out.vertices).all()


def test_closed_head_and_eyeballs(data):
    m = trimesh.Trimesh(data.v_template, data.faces, process=False)
    parts = m.split(only_watertight=False)
    assert len(parts) == 3 and all(p.is_watertight and p.volume > 0 for p in parts)
    part = data.extras["part"]
    head = trimesh.Trimesh(data.v_template[part == 0], data.faces[np.all(part[data.faces] == 0, 1)], process=False)
    assert head.is_watertight and head.euler_number == 2                       # a sphere: no holes, no handles
    for j, sign in ((3, 1), (4, -1)):
        assert (data.weights[part == j, j] == 1).all()
        assert np.sign(data.v_template[part == j, 0].mean()) == sign        # joint 3 is the left eye (+X)


@pytest.mark.parametrize("which", ["left_eye_pose", "right_eye_pose"])
def test_eyes_rotate_rigidly(flame, data, which):
    j = 3 if which == "left_eye_pose" else 4
    part = data.extras["part"]
    out = flame(**{which: torch.tensor([[0.1, 0.4, 0.0]])})
    v0, v1 = data.v_template[part == j], out.vertices[0].numpy()[part == j]
    c = out.joints[0, j].numpy()
    assert np.allclose(np.linalg.norm(v1 - c, axis=1), np.linalg.norm(v0 - c, axis=1), atol=1e-6)
    assert np.abs(v1 - v0).max() > 3e-3
    assert np.allclose(out.vertices[0].numpy()[part == 0], data.v_template[part == 0], atol=1e-7)  # the head does not move


def test_jaw_opens_mouth_not_skull(flame, data):
    v0 = data.v_template
    v1 = flame(jaw_pose=torch.tensor([[0.25, 0.0, 0.0]])).vertices[0].numpy()
    L0 = flame().landmarks[0].numpy(); L1 = flame(jaw_pose=torch.tensor([[0.25, 0.0, 0.0]])).landmarks[0].numpy()
    gap0, gap1 = L0[62, 1] - L0[66, 1], L1[62, 1] - L1[66, 1]
    assert gap1 - gap0 > 0.008                                               # inner lips part by more than 8 mm
    assert L1[57, 1] < L0[57, 1] - 0.008 and L1[8, 1] < L0[8, 1] - 0.01        # lower lip and chin go down
    assert abs(L1[51, 1] - L0[51, 1]) < 1e-3                                   # upper lip stays
    skull = v0[:, 1] > 0.04
    assert np.abs(v1[skull] - v0[skull]).max() < 1e-6


@pytest.mark.parametrize("name,region", [
    ("blink_left", "upper_lid_left"), ("blink_right", "upper_lid_right"), ("brow_raise", "brows"),
    ("smile", "mouth_corners"), ("pucker", "lips"), ("smile_left", "mouth_corner_left"),
])
def test_expression_moves_its_region(flame, data, name, region):
    v0 = data.v_template
    d = _expr(flame, data, name, 1.0) - v0
    i = np.argmax(np.linalg.norm(d, axis=1))
    x, y, z = v0[i]
    cx, cy, cz = S.HEAD["eye_center"]; ym, mw = S.HEAD["mouth_y"], S.HEAD["mouth_half_width"]
    if region.startswith("upper_lid"):
        side = 1 if region.endswith("left") else -1
        assert abs(x - side * cx) < 0.015 and cy < y < cy + 0.02 and d[i, 1] < 0     # moves down
    elif region == "brows":
        assert 0.04 < y < 0.06 and d[i, 1] > 0
    elif region == "mouth_corners":
        assert abs(abs(x) - mw) < 0.012 and abs(y - ym) < 0.012 and d[i, 1] > 0
    elif region == "mouth_corner_left":
        assert x > 0.01 and abs(y - ym) < 0.012 and d[i, 1] > 0
    elif region == "lips":
        assert abs(x) < 0.03 and abs(y - ym) < 0.015 and z > 0.06
    far = np.linalg.norm(d[v0[:, 1] < -0.12], axis=1)                          # the neck never moves
    assert far.max() < 1e-6


def test_eyelids_close_over_eyeball(data, flame):
    out = flame(eyelids=torch.tensor([[1.0, 0.0]])).vertices[0].numpy()
    part = data.extras["part"]
    c = np.array(S.HEAD["eye_center"])
    # after closing, skin covers the front of the left eyeball: rays from the front hit the head first
    head = trimesh.Trimesh(out[part == 0], data.faces[np.all(part[data.faces] == 0, 1)], process=False)
    xy = np.array([[c[0], c[1] + dy] for dy in (-0.002, 0.0, 0.002)])
    loc, ri, _ = head.ray.intersects_location(np.c_[xy, np.full(3, 0.3)], np.tile([0, 0, -1.0], (3, 1)))
    for k in range(3):
        assert (loc[ri == k, 2] > c[2] + S.HEAD["eye_radius"]).any()
    # the open right eye shows its eyeball
    xy = np.array([[-c[0], c[1]]])
    loc, ri, _ = head.ray.intersects_location(np.c_[xy, [0.3]], np.array([[0, 0, -1.0]]))
    assert not (loc[:, 2] > c[2] + S.HEAD["eye_radius"]).any()


def test_identity_modes(data):
    G = data.shapedirs.reshape(-1, data.shapedirs.shape[2]).astype(np.float64)
    G = G.T @ G
    assert np.abs(G - np.diag(np.diag(G))).max() < 1e-4 * np.diag(G).min()
    mx = np.linalg.norm(data.shapedirs, axis=1).max(0)
    assert 0.0014 < mx.min() and mx.max() < 0.0081
    part = data.extras["part"]
    for j in (3, 4):                                                           # eyeballs only translate
        e = data.shapedirs[part == j]
        assert np.abs(e - e[:1]).max() < 1e-7


def test_landmarks(flame, data):
    L = flame().landmarks[0].numpy()
    pairs = [(36, 45), (39, 42), (17, 26), (21, 22), (31, 35), (48, 54), (49, 53), (59, 55), (60, 64), (0, 16), (4, 12)]
    for a, b in pairs:
        assert abs(L[a, 0] + L[b, 0]) < 4e-3 and abs(L[a, 1] - L[b, 1]) < 4e-3, (a, b)
        assert L[a, 0] < 0 < L[b, 0], (a, b)                                  # iBUG starts on the subject's right
    assert L[30, 2] == L[27:36, 2].max() and L[8, 1] == L[:17, 1].min()
    assert L[27, 1] > L[28, 1] > L[29, 1] > L[30, 1] > L[33, 1] > L[51, 1] > L[57, 1] > L[8, 1]
    assert L[37, 1] > L[41, 1] and L[44, 1] > L[46, 1]                         # upper lid above lower lid
    assert abs(L[:, 0]).max() < 0.08
    # the contour depends on the yaw bin
    assert not torch.allclose(flame.dynamic_lmk_faces_idx[0], flame.dynamic_lmk_faces_idx[28])


def test_albedo_and_regions(data):
    a, B = data.albedo_mean, data.albedo_basis
    assert a.min() >= 0 and a.max() <= 1
    for k in range(B.shape[2]):
        for s in (-3, 3):
            assert (a + s * B[:, :, k]).min() >= 0 and (a + s * B[:, :, k]).max() <= 1
    ex = data.extras
    for r in ("face", "scalp", "neck", "lips", "eyeball_left", "eyeball_right", "eye_sockets", "mouth_interior"):
        m = ex[f"region_{r}"]; assert m.dtype == bool and m.shape == (data.n_verts,) and m.any(), r
    lips, face = ex["region_lips"], ex["region_face"]
    assert (a[lips, 0] - a[lips, 1]).mean() > (a[face, 0] - a[face, 1]).mean()
    assert len(ex["now7_vertex_ids"]) == 7 and list(ex["now7_lmk68"]) == [36, 39, 42, 45, 33, 48, 54]
