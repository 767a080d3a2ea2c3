"Tests for headbook.models.ict (ICT-FaceKit loader + added skeleton). Need ../shared/ict-facekit."
import os
from pathlib import Path
import numpy as np
import pytest
import torch

from headbook.models import ict as I
from headbook.models.flame import FLAME, validate_head_model_data
from headbook.geometry.rotations import axis_angle_to_matrix

_ROOT = Path(__file__).resolve().parents[1]
_CANDS = [_ROOT.parent / "shared" / "ict-facekit", Path("/work/shared/ict-facekit")]
SHARED = next((p for p in _CANDS if (p / "ict_facekit_light.npz").exists()), None)
pytestmark = pytest.mark.skipif(SHARED is None, reason="ICT-FaceKit not available: needs ../shared/ict-facekit "
                                "(ict_facekit_light.npz + FaceXModel/) next to the repository or /work/shared")
NPZ = SHARED / "ict_facekit_light.npz" if SHARED else None
FOLDER = SHARED / "FaceXModel" if SHARED else None


def _readme_landmarks():
    lines = (SHARED / "README-ICT-FaceKit.md").read_text().splitlines()
    i = next(k for k, l in enumerate(lines) if "Multi-PIE 68 point facial landmarks indices" in l)
    row = next(l for l in lines[i + 1:] if l.strip())
    return [int(x) for x in row.replace(",", " ").split()]


@pytest.fixture(scope="module")
def ict(): return I.load_ict(NPZ)

@pytest.fixture(scope="module")
def raw(): return I.read_ict(NPZ)

@pytest.fixture(scope="module")
def model(ict): return FLAME(ict)


def test_npz_and_folder_agree(ict, raw):
    rf = I.read_ict(FOLDER)
    np.testing.assert_allclose(rf.neutral, raw.neutral, atol=1e-5)
    np.testing.assert_array_equal(rf.polygons, raw.polygons)
    assert rf.identity_deltas.shape[0] == 2                          # identity000, identity001 in the shared copy
    np.testing.assert_allclose(rf.identity_deltas, raw.identity_deltas[:2], atol=1e-4)
    assert sorted(rf.expression_names) == ["eyeBlink_L", "jawOpen", "mouthSmile_L"]
    for k, n in enumerate(rf.expression_names):
        np.testing.assert_allclose(rf.expression_deltas[k], raw.expression_deltas[raw.expression_names.index(n)], atol=1e-4)
    fd = I.load_ict(FOLDER)
    np.testing.assert_allclose(fd.v_template, ict.v_template, atol=1e-7)
    np.testing.assert_allclose(fd.shapedirs, ict.shapedirs[:, :, :2], atol=1e-6)
    np.testing.assert_allclose(fd.exprdirs[:, :, fd.extras["expression_names"].index("jawOpen")],
                               ict.exprdirs[:, :, ict.extras["expression_names"].index("jawOpen")], atol=1e-6)
    np.testing.assert_allclose(fd.J_regressor, ict.J_regressor, atol=1e-6)   # same skeleton from either layout
    np.testing.assert_allclose(fd.weights, ict.weights, atol=1e-5)


def test_metres_and_frame(ict):
    v = ict.v_template
    band = v[np.abs(v[:, 1] - 0.07) < 0.005]                      # forehead level, above the ears
    width = np.ptp(band[:, 0])
    assert 0.13 < width < 0.18, width                               # a head ~15 cm wide, in metres
    assert abs(v[:, 0].mean()) < 1e-3                               # symmetric about x = 0
    eyes = ict.J_regressor[3:] @ v
    assert eyes[0, 0] > 0 > eyes[1, 0]                              # left eye (joint 3) on +X
    nose = v[ict.extras["landmark_vertex_ids"][30]]
    assert nose[2] > eyes[:, 2].max()                               # the face looks along +Z


def test_faces_valid_and_outward(ict):
    f, ids = ict.faces, ict.extras["ict_vertex_ids"]
    assert f.min() >= 0 and f.max() == ict.n_verts - 1
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    skin = f[(ids[f] <= I.ICT_GEOMETRY["head_neck"][1]).all(1)]
    cons, vol = I.orientation_check(ict.v_template, skin, [0, 0, 0])
    assert cons == 1.0 and 2e-3 < vol < 6e-3                        # m^3: consistent, normals outward
    for side in ("left", "right"):
        a, b = I.ICT_GEOMETRY["eyeball_" + side][:2]
        fe = f[((ids[f] >= a) & (ids[f] <= b)).all(1)]
        cons, vol = I.orientation_check(ict.v_template, fe)
        assert cons == 1.0 and vol > 1e-5


def test_subset_mapping(ict, raw):
    ids = ict.extras["ict_vertex_ids"]
    assert len(ids) == 9409 + 1839 + 2 * 1570 and (np.diff(ids) > 0).all()
    np.testing.assert_allclose(ict.v_template, raw.neutral[ids] / 100, atol=1e-7)
    full = I.triangulate(raw.polygons)
    keep = np.isin(full, ids).all(1)
    assert {tuple(t) for t in ids[ict.faces]} == {tuple(t) for t in full[keep]}
    np.testing.assert_allclose(ict.shapedirs[:, :, 5], raw.identity_deltas[5, ids] / 100, atol=1e-7)
    ids_face, f_face = I.ict_subset(raw.polygons, "face")
    assert (ids_face == np.arange(9409)).all() and f_face.max() == 9408
    with pytest.raises(ValueError, match="subset"): I.ict_subset(raw.polygons, "bogus")


@pytest.mark.parametrize("subset", ["default", "face", "full"])
def test_head_model_data_validates(subset):
    d = I.load_ict(NPZ, subset=subset)
    validate_head_model_data(d)
    assert np.allclose(d.weights.sum(1), 1, atol=1e-5) and (d.weights >= 0).all()
    assert np.allclose(d.J_regressor.sum(1), 1, atol=1e-5) and (d.J_regressor >= 0).all()
    assert (d.parents == [-1, 0, 1, 1, 1]).all() and not d.posedirs.any()
    if subset != "face": assert d.extras["joint_miss"].max() < 1e-4      # joints hit their targets
    out = FLAME(d, n_shape=10, n_expr=5)(shape=torch.zeros(1, 10))
    assert torch.isfinite(out.vertices).all()


def test_truncation():
    d = I.load_ict(NPZ, n_shape=20, n_expr=10)
    assert d.shapedirs.shape[2] == 20 and d.exprdirs.shape[2] == 10 and len(d.extras["expression_names"]) == 10


@pytest.mark.parametrize("B", [1, 8])
def test_flame_forward(model, ict, B):
    g = torch.Generator().manual_seed(B)
    out = model(shape=torch.randn(B, 100, generator=g), expression=torch.rand(B, 57, generator=g) * 0.5,
                jaw_pose=torch.rand(B, 3, generator=g) * 0.2, neck_pose=torch.randn(B, 3, generator=g) * 0.1)
    assert out.vertices.shape == (B, ict.n_verts, 3) and out.landmarks.shape == (B, 68, 3) and out.joints.shape == (B, 5, 3)
    assert torch.isfinite(out.vertices).all()


def test_eyes_rotate_rigidly(model, ict):
    ids = ict.extras["ict_vertex_ids"]
    rest = model()
    for k, side, arg in [(3, "left", "left_eye_pose"), (4, "right", "right_eye_pose")]:
        a, b = I.ICT_GEOMETRY["eyeball_" + side][:2]
        m = torch.as_tensor((ids >= a) & (ids <= b))
        aa = torch.tensor([[0.2, -0.3, 0.05]])
        out = model(**{arg: aa})
        c, R = rest.joints[0, k], axis_angle_to_matrix(aa)[0]
        torch.testing.assert_close(out.vertices[0, m], (rest.vertices[0, m] - c) @ R.T + c, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.vertices[0, ~m], rest.vertices[0, ~m])
        # the joint is the eyeball's centre: every eyeball vertex keeps its distance to it (a sphere, r ~ 1.6 cm)
        r = (rest.vertices[0, m] - c).norm(dim=-1)
        assert 0.012 < r.median() < 0.02


def test_eye_joint_follows_identity(model, ict):
    ids = ict.extras["ict_vertex_ids"]
    beta = torch.zeros(1, 100); beta[0, :5] = torch.tensor([2.0, -2.0, 1.5, -1.0, 2.0])
    out = model(shape=beta)
    a, b = I.ICT_GEOMETRY["eyeball_left"][:2]
    ball = out.vertices[0, torch.as_tensor((ids >= a) & (ids <= b))].double().numpy()
    c = I._sphere_centre(ball)
    assert np.linalg.norm(out.joints[0, 3].double().numpy() - c) < 5e-4   # within 0.5 mm of the fitted centre


def test_jaw_pose_moves_chin_not_forehead(model, ict):
    lm = ict.extras["landmark_vertex_ids"]
    rest = model()
    out = model(jaw_pose=torch.tensor([[0.3, 0.0, 0.0]]))
    d = (out.vertices[0] - rest.vertices[0]).norm(dim=-1)
    assert d[lm[8]] > 0.015 and d[lm[57]] > 0.015                    # chin, lower lip (m)
    assert (out.vertices[0, lm[8], 1] < rest.vertices[0, lm[8], 1])  # the chin goes down
    assert d[lm[19]] < 1e-5 and d[lm[24]] < 1e-5                     # brows
    top = ict.v_template[:, 1] > 0.09                                  # forehead and skull
    assert d[torch.as_tensor(top)].max() < 1e-5
    assert d[lm[51]] < d[lm[57]] / 3                                   # upper lip moves far less


def test_skinned_jaw_matches_jawopen(model, ict):
    th = ict.extras["jaw_open_angle"]
    rest = model()
    skinned = (model(jaw_pose=torch.tensor([[th, 0.0, 0.0]])).vertices[0] - rest.vertices[0]).numpy()
    jo = ict.exprdirs[:, :, ict.extras["expression_names"].index("jawOpen")]
    corr = np.corrcoef(skinned.ravel(), jo.ravel())[0, 1]
    rel = np.linalg.norm(skinned - jo) / np.linalg.norm(jo)
    print(f"skinned jaw rotation ({np.degrees(th):.1f} deg) vs jawOpen: correlation {corr:.4f}, relative residual {rel:.3f}")
    assert corr > 0.95 and rel < 0.3
    assert 0.35 < th < 0.55


def test_jaw_pose_gradient(model):
    jaw = torch.tensor([[0.1, 0.0, 0.0]], requires_grad=True)
    out = model(jaw_pose=jaw)
    out.landmarks[:, 8, 1].sum().backward()
    assert jaw.grad is not None and jaw.grad[0, 0] < 0          # opening further lowers the chin


def test_landmarks_match_readme(ict, model):
    readme = _readme_landmarks()
    assert len(readme) == 68 and tuple(readme) == I.ICT_LANDMARKS_68
    import json
    js = json.loads((FOLDER / "vertex_indices.json").read_text())["idx_to_landmark_verts"]
    assert list(js) == readme
    ids = ict.extras["ict_vertex_ids"]
    assert list(ids[ict.extras["landmark_vertex_ids"]]) == readme
    out = model()
    torch.testing.assert_close(out.landmarks[0, 17:], torch.as_tensor(ict.v_template[ict.extras["landmark_vertex_ids"][17:]]))
    # frontal contour (yaw bin 0) lies on the jawline vertices of its band; iBUG 0 on the subject's right (-X)
    assert out.landmarks[0, 0, 0] < 0 < out.landmarks[0, 16, 0]
    assert list(ict.extras["now7_vertex_ids"]) == [ict.extras["landmark_vertex_ids"][i] for i in (36, 39, 42, 45, 33, 48, 54)]


def test_dynamic_contour_follows_yaw(model):
    a = model(global_pose=torch.tensor([[0.0, 0.0, 0.0]])).landmarks[0, :17]
    b = model(global_pose=torch.tensor([[0.0, np.radians(30), 0.0]])).landmarks[0, :17]
    c = model(global_pose=torch.tensor([[0.0, -np.radians(30), 0.0]])).landmarks[0, :17]
    assert not torch.allclose(b, c) and torch.isfinite(a).all()


def test_missing_path_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="ICT-VGL/ICT-FaceKit"):
        I.find_ict(tmp_path / "nothing.npz")
    monkeypatch.setenv("HEADBOOK_ICT", str(tmp_path / "nope"))
    monkeypatch.setenv("HEADBOOK_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(I, "_repo_root", lambda: None)
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")
    with pytest.raises(FileNotFoundError) as e:
        I.load_ict()
    msg = str(e.value)
    for p in [tmp_path / "nope", tmp_path / "assets" / "ict-facekit", tmp_path / "home" / ".cache" / "headbook" / "ict-facekit",
              tmp_path / "a" / "shared" / "ict-facekit"]:
        assert str(p) in msg, (p, msg)
    assert "HEADBOOK_ICT" in msg and "MIT" in msg


def test_jawopen_needed(raw):
    bad = I.ICTRaw(raw.neutral, raw.polygons, raw.identity_deltas[:1], raw.expression_deltas[:1], raw.expression_names[:1], raw.source)
    with pytest.raises(ValueError, match="jawOpen"): I.jaw_hinge(bad)
