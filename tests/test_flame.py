import os, pickle, sys, types
import numpy as np
import pytest
import torch
from headbook.models.flame import FLAME, HeadModelData
from headbook.models.registry import load_head_model
from headbook.models.assets import (read_flame_pkl, write_flame_pkl, safe_load_pickle, safe_load_npy, UnsafePickleError,
                                    read_landmark_embedding)
from conftest import random_head_data, need_shared, SHARED


def _source(name):
    if name == "random": return random_head_data()
    if name == "synthhead":
        from headbook.models.synthhead import build_synthhead
        return build_synthhead()
    if name == "ict":
        need_shared()
        from headbook.models.ict import load_ict
        import copy
        return copy.deepcopy(load_ict())   # load_ict caches its arrays; this test edits the copy


def _smplx_flame(folder, S, E, B, contour=False):
    import smplx
    return smplx.FLAME(model_path=str(folder), num_betas=S, num_expression_coeffs=E, batch_size=B,
                       use_face_contour=contour, create_transl=False)


def _rand_params(B, S, E, gen, scale=0.25):
    return dict(shape=torch.randn(B, S, generator=gen), expression=torch.randn(B, E, generator=gen),
                global_pose=torch.randn(B, 3, generator=gen) * scale, neck_pose=torch.randn(B, 3, generator=gen) * scale,
                jaw_pose=torch.randn(B, 3, generator=gen) * scale, left_eye_pose=torch.randn(B, 3, generator=gen) * scale,
                right_eye_pose=torch.randn(B, 3, generator=gen) * scale, translation=torch.randn(B, 3, generator=gen) * 0.1)


@pytest.mark.parametrize("source", ["random", "synthhead", "ict"])
@pytest.mark.parametrize("B", [1, 8])
def test_equals_smplx_flame(tmp_path, source, B):
    data = _source(source)
    S, E = min(data.shapedirs.shape[2], 300), min(data.exprdirs.shape[2], 100)
    data.eyelid_dirs = None  # smplx has no eyelids
    ours = FLAME(data)
    write_flame_pkl(data, tmp_path / "FLAME_NEUTRAL.pkl")
    peer = _smplx_flame(tmp_path, S, E, B)
    g = torch.Generator().manual_seed(B)
    p = _rand_params(B, S, E, g)
    out = ours(**p)
    ref = peer(betas=p["shape"], expression=p["expression"], global_orient=p["global_pose"], neck_pose=p["neck_pose"],
               jaw_pose=p["jaw_pose"], leye_pose=p["left_eye_pose"], reye_pose=p["right_eye_pose"], transl=p["translation"])
    assert out.vertices.shape == ref.vertices.shape == (B, data.n_verts, 3)
    assert (out.vertices - ref.vertices).abs().max() < 1e-6
    assert (out.static_landmarks - ref.joints[:, 5:5 + 51]).abs().max() < 1e-6
    assert (out.joints - ref.joints[:, :5]).abs().max() < 1e-6


@pytest.mark.parametrize("source", ["random", "synthhead", "ict"])
def test_layer_matches_lbs_reference(source):
    """The layer's fast path (one stacked blend matrix, joints regressed from precomputed J·dirs) against the plain
    `models.lbs.lbs` reference twin, with every input the model takes (eyelids too), and the landmarks against
    `geometry.mesh.barycentric_interpolate` on the posed vertices."""
    from headbook.models.lbs import lbs
    from headbook.models.lbs import dynamic_contour_bin
    from headbook.geometry.mesh import barycentric_interpolate
    data = _source(source)
    m = FLAME(data)
    g = torch.Generator().manual_seed(11)
    B, S, E = 4, m.n_shape, m.n_expr
    p = _rand_params(B, S, E, g)
    if m.n_eyelids: p["eyelids"] = torch.rand(B, 2, generator=g)
    out = m(**p)
    V = data.n_verts
    dirs = [data.shapedirs, data.exprdirs] + ([data.eyelid_dirs] if m.n_eyelids else [])
    dirs = torch.as_tensor(np.concatenate([np.asarray(d, np.float32) for d in dirs], 2))
    coeffs = torch.cat([p["shape"], p["expression"]] + ([p["eyelids"]] if m.n_eyelids else []), 1)
    pose = torch.stack([p[k] for k in ("global_pose", "neck_pose", "jaw_pose", "left_eye_pose", "right_eye_pose")], 1)
    posedirs = torch.as_tensor(np.asarray(data.posedirs, np.float32).reshape(V * 3, 36).T.copy())
    v, j, rot = lbs(coeffs, pose, m.v_template, dirs, posedirs, m.J_regressor, m.parents, m.weights)
    tr = p["translation"][:, None]
    scale = float(out.vertices.abs().max())
    assert (out.vertices - (v + tr)).abs().max() < 1e-6 * max(scale, 1.0)
    assert (out.joints - (j + tr)).abs().max() < 1e-6 * max(scale, 1.0)
    assert torch.equal(out.rot_mats, rot)
    b = dynamic_contour_bin(rot)
    lmk = torch.cat([barycentric_interpolate(out.vertices, m.faces, m.dynamic_lmk_faces_idx[b], m.dynamic_lmk_bary[b]),
                     barycentric_interpolate(out.vertices, m.faces, m.static_lmk_faces_idx, m.static_lmk_bary)], 1)
    assert torch.equal(out.landmarks, lmk)


def test_dynamic_contour_matches_smplx_when_neck_is_still(tmp_path):
    "smplx 0.1.28 reads the yaw from the global rotation only (NECK_IDX=0); DECA and headbook use global∘neck. With a zero neck they agree."
    data = random_head_data(); data.eyelid_dirs = None
    ours = FLAME(data)
    write_flame_pkl(data, tmp_path / "FLAME_NEUTRAL.pkl")
    peer = _smplx_flame(tmp_path, 12, 6, 5, contour=True)
    yaw = torch.tensor([-0.6, -0.3, 0.0, 0.2, 0.65])
    gp = torch.stack([torch.zeros(5), yaw, torch.zeros(5)], -1)
    out = ours(global_pose=gp)
    ref = peer(global_orient=gp, betas=torch.zeros(5, 12), expression=torch.zeros(5, 6))
    assert (out.landmarks[:, :17] - ref.joints[:, 5 + 51:5 + 68]).abs().max() < 1e-6


def test_pkl_roundtrip_and_embedding_files(tmp_path, random_data):
    write_flame_pkl(random_data, tmp_path / "m.pkl")
    assert {"flame_static_embedding.pkl", "flame_dynamic_embedding.npy", "landmark_embedding.npy", "l_eyelid.npy"} <= {p.name for p in tmp_path.iterdir()}
    back = read_flame_pkl(tmp_path / "m.pkl")
    assert np.allclose(back.v_template, random_data.v_template) and np.allclose(back.shapedirs, random_data.shapedirs)
    assert np.allclose(back.eyelid_dirs, random_data.eyelid_dirs)
    a, b = FLAME(random_data), FLAME(back)
    p = _rand_params(3, 12, 6, torch.Generator().manual_seed(0))
    p["eyelids"] = torch.rand(3, 2)
    assert torch.allclose(a(**p).vertices, b(**p).vertices, atol=1e-6)
    # DECA's file alone gives the same embedding as the TF_FLAME pair
    for n in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy"): (tmp_path / n).unlink()
    lm = read_landmark_embedding(tmp_path)
    assert (lm["static_lmk_faces_idx"] == random_data.static_lmk_faces_idx).all()
    assert (lm["dynamic_lmk_faces_idx"] == random_data.dynamic_lmk_faces_idx).all()


def test_load_head_model_from_path(tmp_path, random_data):
    write_flame_pkl(random_data, tmp_path / "generic_model.pkl")
    m = load_head_model(tmp_path / "generic_model.pkl")
    assert m(shape=torch.zeros(2, 5)).vertices.shape == (2, random_data.n_verts, 3)
    with pytest.raises(ValueError, match="unknown head model"):
        load_head_model("nonsense")


# ---------------- bad input ----------------

@pytest.mark.parametrize("kw,msg", [
    (dict(shape=torch.zeros(1, 13)), r"shape must have shape \[B, <= 12\]"),
    (dict(expression=torch.zeros(1, 7)), r"expression must have shape \[B, <= 6\]"),
    (dict(jaw_pose=torch.zeros(1, 4)), r"jaw_pose must have shape \[B, 3\]"),
    (dict(neck_pose=torch.zeros(3)), r"neck_pose must have shape \[B, 3\]"),
    (dict(eyelids=torch.zeros(1, 3)), r"eyelids must have shape \[B, 2\]"),
    (dict(global_pose=torch.tensor([[0., float("nan"), 0.]])), "global_pose contains NaN"),
    (dict(shape=torch.zeros(2, 3), jaw_pose=torch.zeros(3, 3)), "batch size"),
])
def test_bad_parameters(random_data, kw, msg):
    m = FLAME(random_data)
    before = m.blend.clone()
    with pytest.raises(ValueError, match=msg):
        m(**kw)
    assert torch.equal(before, m.blend)   # nothing corrupted


def test_bad_data_fields(random_data):
    import dataclasses
    with pytest.raises(ValueError, match=r"HeadModelData.weights must have shape"):
        dataclasses.replace(random_data, weights=random_data.weights[:, :4])
    with pytest.raises(ValueError, match="faces index vertices outside"):
        dataclasses.replace(random_data, faces=random_data.faces + 10_000)


def test_missing_file_says_where_to_get_flame(tmp_path):
    with pytest.raises(FileNotFoundError, match="flame.is.tue.mpg.de"):
        read_flame_pkl(tmp_path / "generic_model.pkl")


def test_truncated_pkl(tmp_path, random_data):
    p = write_flame_pkl(random_data, tmp_path / "m.pkl")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_flame_pkl(p)


def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(UnsafePickleError, match="refused"):
        read_flame_pkl(p)
    assert not marker.exists()
    # the same through an object .npy (DECA-style embedding file)
    np.save(tmp_path / "landmark_embedding.npy", np.array(Evil(), dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        safe_load_npy(tmp_path / "landmark_embedding.npy")
    assert not marker.exists()


def test_chumpy_pickle_loads_without_chumpy(tmp_path, random_data):
    "A FLAME 2020-style file: arrays wrapped in chumpy.ch.Ch objects, protocol 2, loaded with no chumpy installed."
    fake = types.ModuleType("chumpy.ch"); pkg = types.ModuleType("chumpy"); pkg.ch = fake

    class Ch:
        def __init__(self, x): self.x = x
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"; fake.Ch = Ch
    write_flame_pkl(random_data, tmp_path / "plain.pkl")
    d = safe_load_pickle(tmp_path / "plain.pkl")
    for k in ("v_template", "shapedirs", "posedirs", "weights"): d[k] = Ch(d[k])
    import scipy.sparse as sp
    d["J_regressor"] = sp.csc_matrix(d["J_regressor"])
    sys.modules.update({"chumpy": pkg, "chumpy.ch": fake})
    try:
        blob = pickle.dumps(d, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert "chumpy" not in sys.modules
    (tmp_path / "generic_model.pkl").write_bytes(blob)
    for n in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy"):
        (tmp_path / n).write_bytes((tmp_path / n).read_bytes())
    back = read_flame_pkl(tmp_path / "generic_model.pkl")
    assert np.allclose(back.v_template, random_data.v_template) and np.allclose(back.J_regressor, random_data.J_regressor)


def test_gradients_reach_all_parameters(random_data):
    m = FLAME(random_data)
    p = {k: v.clone().requires_grad_(True) for k, v in _rand_params(2, 12, 6, torch.Generator().manual_seed(5)).items()}
    p["eyelids"] = torch.zeros(2, 2, requires_grad=True)
    out = m(**p)
    (out.vertices.square().sum() + out.landmarks.sum()).backward()
    for k, v in p.items():
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0, k


def test_double_precision_gradcheck(random_data):
    m = FLAME(random_data, dtype=torch.float64)
    jaw = (torch.randn(1, 3, dtype=torch.float64) * 0.2).requires_grad_(True)
    shape = torch.randn(1, 4, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda j, s: m(jaw_pose=j, shape=s).vertices[:, :20], (jaw, shape))


def test_flame_texture_npz(tmp_path):
    from headbook.models.assets import read_flame_texture
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "FLAME_texture.npz", mean=rng.uniform(0, 255, (8, 8, 3)), tex_dir=rng.normal(0, 20, (8, 8, 3, 5)),
             vt=rng.random((10, 2)), ft=np.zeros((4, 3), np.int64))
    t = read_flame_texture(tmp_path / "FLAME_texture.npz")
    assert t["mean"].shape == (8, 8, 3) and t["basis"].shape == (8, 8, 3, 5) and 0 <= t["mean"].min() and t["mean"].max() <= 1
    with pytest.raises(FileNotFoundError, match="FLAME_texture.npz"):
        read_flame_texture(tmp_path / "missing" / "FLAME_texture.npz")


def test_asset_search_uses_env(tmp_path, monkeypatch, random_data):
    from headbook.models.assets import find_asset
    monkeypatch.setenv("HEADBOOK_ASSETS", str(tmp_path))
    write_flame_pkl(random_data, tmp_path / "flame" / "generic_model.pkl")
    assert find_asset("flame2020") == tmp_path / "flame" / "generic_model.pkl"
    assert find_asset("deca_landmarks") == tmp_path / "flame" / "landmark_embedding.npy"
    with pytest.raises(KeyError, match="unknown asset"):
        find_asset("nope")
