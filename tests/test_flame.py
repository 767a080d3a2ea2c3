import copyreg, io, os, pickle, pickletools, struct, sys, types
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


_PY2_MODULES = {"builtins": "__builtin__", "copyreg": "copy_reg", "numpy._core.multiarray": "numpy.core.multiarray",
                "numpy._core.numeric": "numpy.core.numeric", "scipy.sparse._csc": "scipy.sparse.csc"}


class _Py2Pickler(pickle._Pickler):
    "Protocol 2 as Python 2 wrote it: `str` (latin-1 bytes) for text and numpy buffers, Python 2 names in GLOBAL."
    dispatch = dict(pickle._Pickler.dispatch)

    def _str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        n = len(data)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + data if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + data)
        self.memoize(obj)
    dispatch[str] = _str
    dispatch[bytes] = _str

    def save_global(self, obj, name=None):
        mod = getattr(obj, "__module__", None); name = name or obj.__qualname__
        self.write(pickle.GLOBAL + f"{_PY2_MODULES.get(mod, mod)}\n{name}\n".encode("ascii")); self.memoize(obj)
    dispatch[type] = save_global
    dispatch[types.FunctionType] = save_global
    dispatch[types.BuiltinFunctionType] = save_global


def _py2_dumps(obj) -> bytes:
    f = io.BytesIO(); _Py2Pickler(f, protocol=2).dump(obj); return f.getvalue()


def _ch_class(reduce_with):
    "A `chumpy.ch.Ch` stand-in: its pickled state is chumpy's `Ch.__getstate__` (all but _parents, _cache)."
    class Ch:
        def __init__(self, x):
            self.__dict__.update(_dirty_vars={"x"}, _itr=None, _parents={}, _cache={"r": None, "drs": {}},
                                 _make_dense=False, _make_sparse=False, _depends_on_deps={},
                                 x=np.asarray(x))

        def __getstate__(self):
            st = dict(self.__dict__); del st["_parents"], st["_cache"]; return st
        if reduce_with == "reconstructor":   # Python 2's copy_reg._reduce_ex: _reconstructor(Ch, object, None)
            def __reduce_ex__(self, proto):
                return (copyreg._reconstructor, (type(self), object, None), self.__getstate__())
    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    return Ch


def _py2_chumpy_dumps(d, reduce_with="newobj", keys=("v_template", "shapedirs", "posedirs", "weights", "J")):
    "Python 2 pickle of `d` with `keys` wrapped in chumpy `Ch` objects; chumpy.ch exists only while pickling."
    Ch = _ch_class(reduce_with)
    fake = types.ModuleType("chumpy.ch"); pkg = types.ModuleType("chumpy"); pkg.ch = fake; fake.Ch = Ch
    d = {k: Ch(v) if k in keys else v for k, v in d.items()}
    sys.modules.update({"chumpy": pkg, "chumpy.ch": fake})
    try: blob = _py2_dumps(d)
    finally: del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    assert "chumpy" not in sys.modules
    return blob


def _chumpy_twin(folder, data, reduce_with="newobj"):
    "FLAME 2020-style generic_model.pkl (Python 2, chumpy Ch arrays, sparse J_regressor) beside its numpy twin."
    import scipy.sparse as sp
    twin = write_flame_pkl(data, folder / "twin" / "FLAME_NEUTRAL.pkl")
    d = safe_load_pickle(twin)
    d["J_regressor"] = sp.csc_matrix(d["J_regressor"])
    (folder / "generic_model.pkl").write_bytes(_py2_chumpy_dumps(d, reduce_with))
    for n in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy"):
        (folder / n).write_bytes((twin.parent / n).read_bytes())
    return folder / "generic_model.pkl", twin


def _globals(blob):
    out = io.StringIO(); pickletools.dis(blob, out=out)
    return {ln.split("GLOBAL", 1)[1].strip().strip("'") for ln in out.getvalue().splitlines() if " GLOBAL " in ln}


@pytest.mark.parametrize("reduce_with", ["newobj", "reconstructor"])
def test_chumpy_pickle_loads_without_chumpy(tmp_path, random_data, reduce_with):
    "FLAME 2020-style: chumpy Ch state with a set in _dirty_vars, Python 2 names, latin-1 str buffers; no chumpy."
    p, twin = _chumpy_twin(tmp_path, random_data, reduce_with)
    blob = p.read_bytes()
    g = _globals(blob)
    assert {"__builtin__ set", "chumpy.ch Ch", "numpy.core.multiarray _reconstruct", "scipy.sparse.csc csc_matrix"} <= g
    assert ("copy_reg _reconstructor" in g) == (reduce_with == "reconstructor")
    assert not any(x.startswith(("builtins ", "copyreg ", "_codecs ")) for x in g)   # Python 2 names, str buffers
    back, ref = read_flame_pkl(p), read_flame_pkl(twin)
    for k in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights"):
        assert np.array_equal(getattr(back, k), getattr(ref, k)), k
    assert "chumpy" not in sys.modules
    B, S, E = 2, back.shapedirs.shape[2], back.exprdirs.shape[2]
    prm = _rand_params(B, S, E, torch.Generator().manual_seed(0))
    out, twin_out = FLAME(back)(**prm), FLAME(ref)(**prm)
    assert torch.equal(out.vertices, twin_out.vertices)
    ref_data = ref; ref_data.eyelid_dirs = None
    peer = _smplx_flame(twin.parent, S, E, B)
    sm = peer(betas=prm["shape"], expression=prm["expression"], global_orient=prm["global_pose"],
              neck_pose=prm["neck_pose"], jaw_pose=prm["jaw_pose"], leye_pose=prm["left_eye_pose"],
              reye_pose=prm["right_eye_pose"], transl=prm["translation"])
    back.eyelid_dirs = None
    assert (FLAME(back)(**prm).vertices - sm.vertices).abs().max() < 1e-6


def _op_global(mod, name): return pickle.GLOBAL + f"{mod}\n{name}\n".encode()


def _op_str(s): b = s.encode(); return pickle.SHORT_BINSTRING + bytes([len(b)]) + b


def _hostile_pickles(marker):
    "Pickles that try to run `touch marker` through every route the wider allow-list could open."
    cmd = _op_str(f"touch {marker}")
    G, P, R, T1, B, M = _op_global, b"\x80\x02", pickle.REDUCE, pickle.TUPLE1, pickle.BUILD, pickle.MARK
    return {
        "os.system": P + G("os", "system") + cmd + T1 + R + b".",
        "posix.system": P + G("posix", "system") + cmd + T1 + R + b".",
        "reconstructor Popen": P + G("copy_reg", "_reconstructor") + G("subprocess", "Popen")
                               + G("__builtin__", "object") + cmd + pickle.TUPLE3 + R + b".",
        "reconstructor os._wrap_close": P + G("copy_reg", "_reconstructor") + G("os", "_wrap_close")
                                        + G("__builtin__", "object") + pickle.NONE + pickle.TUPLE3 + R + b".",
        "reconstructor ndarray from dtype": P + G("copy_reg", "_reconstructor") + G("numpy", "ndarray")
                                           + G("numpy", "dtype") + _op_str("f8") + pickle.TUPLE3 + R + b".",
        "copy_reg.__newobj__": P + G("copy_reg", "__newobj__") + G("subprocess", "Popen") + cmd + pickle.TUPLE2
                               + R + b".",
        "copyreg.__newobj__ with object": P + G("copyreg", "__newobj__") + G("__builtin__", "object") + T1 + R + b".",
        "getattr(object, ...)": P + G("__builtin__", "getattr") + G("__builtin__", "object") + _op_str("__new__")
                                + pickle.TUPLE2 + R + b".",
        "eval": P + G("__builtin__", "eval") + _op_str(f"__import__('os').system('touch {marker}')") + T1 + R + b".",
        "builtins.exec": P + G("builtins", "exec") + _op_str("import os") + T1 + R + b".",
        "apply": P + G("__builtin__", "apply") + G("os", "system") + cmd + T1 + pickle.TUPLE2 + R + b".",
        "__import__": P + G("__builtin__", "__import__") + _op_str("os") + T1 + R + b".",
        "set as a callable": P + G("__builtin__", "set") + G("os", "system") + T1 + R + b".",
        "_codecs.encode with a chosen codec": P + G("_codecs", "encode") + _op_str("x") + _op_str("zlib_codec")
                                              + pickle.TUPLE2 + R + b".",
        "chumpy stand-in without state": P + G("chumpy.ch", "Ch") + pickle.EMPTY_TUPLE + pickle.NEWOBJ + b".",
        "set of a command string": P + G("__builtin__", "set") + cmd + T1 + R + b".",
        "NEWOBJ object with args": P + G("__builtin__", "object") + cmd + T1 + pickle.NEWOBJ + b".",
        "BUILD __setstate__ onto OrderedDict": P + G("collections", "OrderedDict") + pickle.EMPTY_TUPLE + R
                                             + M + _op_str("__setstate__") + G("os", "system") + pickle.DICT + B
                                             + cmd + B + b".",
        "BUILD __reduce__ onto a chumpy stand-in": P + G("chumpy.ch", "Ch") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
                                                 + M + _op_str("__reduce__") + G("nt", "system") + pickle.DICT + B
                                                 + b".",
        "BUILD __setstate__=set onto OrderedDict": P + G("collections", "OrderedDict") + pickle.EMPTY_TUPLE + R
                                                  + M + _op_str("__setstate__") + G("__builtin__", "set")
                                                  + pickle.DICT + B + cmd + B + b".",
    }


@pytest.mark.parametrize("name", list(_hostile_pickles("m")))
def test_hostile_pickles_run_nothing(tmp_path, name):
    "Each route to `os.system` is refused or ends in an inert value; the marker file is never created."
    marker = tmp_path / "pwned"
    blob = _hostile_pickles(marker)[name]
    try:
        obj = safe_load_pickle(blob)
    except (UnsafePickleError, ValueError) as e:
        assert any(m in str(e) for m in ("refused", "not a readable pickle", "cannot read the value")), e
    else:   # only inert data may come back: plain containers, holding at most allow-listed builtins
        assert isinstance(obj, (dict, set, frozenset)), type(obj)
        assert all(v in (set, frozenset) for v in getattr(obj, "__dict__", {}).values() if callable(v))
    assert not marker.exists()
    if name.split()[0] in ("os.system", "posix.system", "eval", "apply", "getattr(object,", "__import__",
                           "builtins.exec", "copy_reg.__newobj__", "copyreg.__newobj__"):
        with pytest.raises(UnsafePickleError, match="refused"): safe_load_pickle(blob)


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


def test_flame_version_and_assets_report(tmp_path, monkeypatch, capsys, random_data):
    "2020 from chumpy storage, 2023 from numpy + name, 2023 Open from the sha256, unknown/other otherwise; CLI shows it."
    import headbook.models.assets as A
    from headbook.cli import main
    V = 5023
    d = dict(v_template=np.zeros((V, 3)), shapedirs=np.zeros((V, 3, 400), np.uint8), f=np.zeros((1, 3), np.uint32))
    fl = tmp_path / "flame"; fl.mkdir()
    (fl / "generic_model.pkl").write_bytes(_py2_chumpy_dumps(d, keys=("v_template", "shapedirs")))
    for n in ("flame2023.pkl", "flame2023_Open.pkl", "other.pkl"):
        (fl / n).write_bytes(pickle.dumps(dict(d, note=n), protocol=4))
    monkeypatch.setattr(A, "FLAME_2023_OPEN_SHA256", A.sha256(fl / "flame2023_Open.pkl"))
    want = {"generic_model.pkl": "FLAME 2020", "flame2023.pkl": "FLAME 2023", "flame2023_Open.pkl": "FLAME 2023 Open",
            "other.pkl": "FLAME (version unknown)"}
    for n, v in want.items():
        got = A.flame_version(fl / n)
        assert got["version"] == v and got["sha256"] == A.sha256(fl / n), (n, got)
    assert A.flame_version(write_flame_pkl(random_data, tmp_path / "r" / "m.pkl"))["version"] == "not FLAME's mesh"
    monkeypatch.setenv("HEADBOOK_ASSETS", str(tmp_path)); monkeypatch.setenv("HEADBOOK_CACHE", str(tmp_path / "c"))
    rows = {r["key"]: r for r in A.asset_report()}
    assert [rows[k]["version"] for k in ("flame2020", "flame2023", "flame2023_open")] == \
        ["FLAME 2020", "FLAME 2023", "FLAME 2023 Open"]
    assert main(["assets"]) in (0, None)
    out = capsys.readouterr().out
    for v in ("FLAME 2020", "FLAME 2023", "FLAME 2023 Open"): assert f"recognised: {v}" in out
    assert f"sha256 {A.sha256(fl / 'generic_model.pkl')}" in out and "matches the published sha256" in out


def test_entry_point_refuses_inputs_that_describe_no_head():
    # issue 17: jaw_pose=1e30 used to return NaN vertices, batch size 0 failed deep in lbs, n_shape=-1 was accepted
    from headbook.models import load_head_model
    m = load_head_model("synthhead")
    with pytest.raises(ValueError, match=r"jaw_pose has a value of 1e\+30 axis-angle radians"):
        m(jaw_pose=torch.tensor([[1e30, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"shape has a value of 5e\+03 σ units"):
        m(shape=torch.full((1, 3), 5e3))
    with pytest.raises(ValueError, match="translation has a value"):
        m(translation=torch.tensor([[0.0, 0.0, 2e3]]))
    with pytest.raises(ValueError, match="expression has batch size 0"):
        m(expression=torch.zeros(0, 4))
    with pytest.raises(ValueError, match="global_pose contains NaN"):
        m(global_pose=torch.tensor([[float("nan"), 0.0, 0.0]]))
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="n_shape must be a non-negative int"):
            load_head_model("synthhead", n_shape=bad)
    with pytest.raises(ValueError, match="n_expr must be a non-negative int"):
        load_head_model("synthhead", n_expr=-3)
    # the largest legal values still give finite vertices, and 0 identity components is a valid (mean-head) model
    out = m(jaw_pose=torch.tensor([[999.0, 0.0, 0.0]]), shape=torch.full((1, 3), 999.0))
    assert torch.isfinite(out.vertices).all()
    assert load_head_model("synthhead", n_shape=0).n_shape == 0
