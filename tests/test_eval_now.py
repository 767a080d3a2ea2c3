"NoW protocol: Procrustes, refinement minimum, invariance, known offset, dataset layout, bad input."
import json
from pathlib import Path
import numpy as np, pytest, trimesh
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation
from headbook.eval.distance import closest_points_brute_force
from headbook.eval.now import (Similarity, crop_face, now_scan_to_mesh, procrustes, refine_alignment,
                               remove_degenerate_faces)
from headbook.data.now import evaluate_now, read_landmarks, read_mesh, read_pp, write_pp, write_prediction


def lmks(r):
    return np.array([[-45, 30, r], [-15, 30, r], [15, 30, r], [45, 30, r], [0, -5, r + 10], [-25, -35, r], [25, -35, r]], float)


def test_procrustes_exact_and_reflection():
    g = np.random.default_rng(0)
    Y = g.normal(size=(7, 3)); R = Rotation.random(random_state=3).as_matrix()
    X = 2.5 * Y @ R.T + np.array([1., 2, 3])
    T = procrustes(Y, X)
    assert np.isclose(T.scale, 2.5) and np.allclose(T.rotation, R) and np.allclose(T.translation, [1, 2, 3])
    M = np.diag([-1., 1, 1])
    Tm = procrustes(Y @ M, X)                          # reflection='best' (the reference) keeps the mirror
    assert np.isclose(np.linalg.det(Tm.rotation), -1) and np.allclose(Tm(Y @ M), X)
    Tr = procrustes(Y @ M, X, reflection=False)        # forced proper rotation fits worse
    assert np.isclose(np.linalg.det(Tr.rotation), 1) and not np.allclose(Tr(Y @ M), X, atol=1e-3)
    with pytest.raises(ValueError, match="shape"):
        procrustes(Y[:6], X)


def test_crop_matches_formula():
    L = lmks(50.0); v = np.random.default_rng(0).uniform(-150, 150, size=(5000, 3))
    c = crop_face(v, L)
    bridge = (L[1] + L[2]) / 2; centre = L[4] + 0.3 * (bridge - L[4])
    rad = 1.4 * (np.linalg.norm(L[0] - L[3]) + np.linalg.norm(bridge - L[4])) / 2
    assert np.allclose(c.center, centre) and np.isclose(c.radius, rad)
    assert set(c.vertex_ids) == set(np.nonzero(np.linalg.norm(v - centre, axis=1) <= rad)[0])


def test_refinement_reaches_least_squares_minimum():
    m = trimesh.creation.icosphere(2, radius=30.0)
    pv = np.asarray(m.vertices) * np.array([1.0, 1.2, 0.8])            # an ellipsoid, not rotation-symmetric
    g = np.random.default_rng(0)
    x = pv[g.choice(len(pv), 150, replace=False)] + g.normal(scale=0.8, size=(150, 3))
    T0 = Similarity(1.03, Rotation.from_rotvec([0.05, -0.03, 0.04]).as_matrix(), np.array([1.0, -0.5, 0.7]))
    x = T0(x)
    ref = refine_alignment(x, pv, m.faces, tol=1e-14)

    def resid(th):
        R = Rotation.from_rotvec(th[1:4]).as_matrix()
        y = np.exp(th[0]) * pv @ R.T + th[4:]
        return closest_points_brute_force(x, y, m.faces).distances
    sol = least_squares(resid, np.zeros(7), x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14)
    c_ls = float((sol.fun ** 2).sum())
    assert abs(ref.cost - c_ls) <= 1e-6 * c_ls
    assert np.isclose(ref.transform.scale, np.exp(sol.x[0]), rtol=1e-4)
    assert np.allclose(ref.transform(pv), np.exp(sol.x[0]) * pv @ Rotation.from_rotvec(sol.x[1:4]).as_matrix().T + sol.x[4:], atol=1e-3)
    # fixed scale (metrical) keeps it
    assert refine_alignment(x, pv, m.faces, fix_scale=True).transform.scale == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_protocol_zero_under_any_similarity(seed):
    m = trimesh.creation.icosphere(3, radius=40.0)
    v = np.asarray(m.vertices) * np.array([1.0, 1.1, 0.9]); L = lmks(40.0)
    T = Similarity(np.exp(np.random.default_rng(seed).normal()), Rotation.random(random_state=seed).as_matrix(),
                   np.random.default_rng(seed).normal(size=3) * 100)
    r = now_scan_to_mesh(v, L, T(v), m.faces, T(L))
    assert r.distances.max() < 1e-6 and len(r.distances) == len(v)
    assert np.allclose(r.aligned_verts, v, atol=1e-5)


def test_protocol_recovers_known_offset_metrical():
    scan = trimesh.creation.icosphere(3, radius=30.0)           # coarse scan
    pred = trimesh.creation.icosphere(6, radius=30.0)           # fine prediction: sag < 0.002 mm
    pv = np.asarray(pred.vertices) * (31.5 / 30.0)              # 1.5 mm outwards everywhere
    T = Similarity(1e-3, Rotation.random(random_state=5).as_matrix(), np.array([0.1, 0.2, 0.3]))
    L = lmks(30.0)
    r = now_scan_to_mesh(scan.vertices, L, T(pv), pred.faces, T(L), metrical=True, unit="m")
    assert abs(np.median(r.distances) - 1.5) < 0.005 and abs(r.distances.mean() - 1.5) < 0.005
    # non-metrical: the free scale absorbs a uniform inflation of a sphere
    r2 = now_scan_to_mesh(scan.vertices, L, T(pv), pred.faces, T(L))
    assert np.median(r2.distances) < 0.01


def make_now(root, pred, with_colours=False):
    lines = ["S1/multiview_neutral/IMG_1.jpg", "S1/selfie/IMG_2.jpg", "S2/multiview_occlusions/IMG_3.jpg",
             "S2/multiview_expressions/IMG_4.jpg"]
    root.mkdir(parents=True); (root / "imagepathsvalidation.txt").write_text("\n".join(lines) + "\n")
    for s, r in (("S1", 30.0), ("S2", 35.0)):
        m = trimesh.creation.icosphere(3, radius=r)
        (root / "scans" / s).mkdir(parents=True)
        with open(root / "scans" / s / "scan.obj", "w") as fh:                       # colours on v lines
            fh.write("".join(f"v {a} {b} {c} 0.5 0.5 0.5\n" for a, b, c in m.vertices))
            fh.write("".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in m.faces))
        write_pp(root / "scans_lmks_onlypp" / s / "scan_picked_points.pp", lmks(r))
    for k, line in enumerate(lines):
        if k == 2: continue                                                            # missing
        r = 30.0 if line.startswith("S1") else 35.0
        m = trimesh.creation.icosphere(3, radius=r)
        T = Similarity(1e-3, Rotation.random(random_state=k).as_matrix(), np.array([0.0, 0.1, 0.2]))
        faces = np.concatenate([m.faces, [[0, 0, 1]]])                                 # one degenerate face
        write_prediction(pred, line, T(m.vertices), faces, T(lmks(r)))
    return lines


def test_dataset_layout_outputs_and_missing(tmp_path):
    lines = make_now(tmp_path / "NoW", tmp_path / "pred")
    res = evaluate_now(tmp_path / "NoW", tmp_path / "pred", method_name="m", progress=False)
    assert res.missing == [lines[2]] and res.num_missing_files == 1
    assert res.images == [lines[0], lines[1], lines[3]]
    assert res.overall.median < 1e-6 and set(res.per_challenge) == {"multiview_neutral", "selfie", "multiview_expressions"}
    out = tmp_path / "pred" / "results"
    d = np.load(out / "m_computed_distances.npy", allow_pickle=True, encoding="latin1").item()
    assert set(d) == {"computed_distances", "num_missing_files", "input_files"} and d["num_missing_files"] == 1
    assert len(d["computed_distances"]) == 3 and d["input_files"] == res.images
    mm = np.loadtxt(out / "m_computed_distances.npy.meanmedian")
    assert mm.shape == (2,) and np.allclose(mm, [res.overall.median, res.overall.mean])
    js = json.loads((out / "m_summary.json").read_text())
    assert js["missing"] == [lines[2]] and (out / "m_cumulative_error.png").stat().st_size > 1000
    # metrical suffix, challenge subset, cleaned mesh
    r2 = evaluate_now(tmp_path / "NoW", tmp_path / "pred", metrical=True, method_name="m", challenge="selfie",
                      clean_mesh=True, out_dir=tmp_path / "o2", progress=False)
    assert r2.images == [lines[1]] and (tmp_path / "o2" / "m_metrical_computed_distances_selfie.npy").exists()


def test_readers_and_bad_input(tmp_path):
    v, f = read_mesh(tmp_path / "x.obj") if False else (None, None)
    p = tmp_path / "quad.obj"; p.write_text("v 0 0 0 1 0 0\nv 1 0 0 1 0 0\nv 1 1 0 1 0 0\nv 0 1 0 1 0 0\nf 1/1 2/2 3/3 4/4\n")
    v, f = read_mesh(p)
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert remove_degenerate_faces(v, np.array([[0, 1, 2], [0, 0, 1], [0, 1, 1]])).tolist() == [[0, 1, 2]]
    np.save(tmp_path / "l6.npy", np.zeros((6, 3)))
    with pytest.raises(ValueError, match=r"7 landmarks"):
        read_landmarks(tmp_path / "l6.npy")
    np.save(tmp_path / "l1.npy", np.ones((1, 7, 3)))
    assert read_landmarks(tmp_path / "l1.npy").shape == (7, 3)
    np.savetxt(tmp_path / "l.txt", np.ones((7, 3)))
    assert read_landmarks(tmp_path / "l.txt").shape == (7, 3)
    (tmp_path / "bad.pp").write_text("<PickedPoints><point x='1' y='2' z='3'/></PickedPoints>")
    with pytest.raises(ValueError, match="7"):
        read_pp(tmp_path / "bad.pp")
    write_pp(tmp_path / "ok.pp", lmks(1.0))
    assert np.allclose(read_pp(tmp_path / "ok.pp"), lmks(1.0))
    with pytest.raises(ValueError, match=r"pred_lmks: NoW needs 7 landmarks of shape \(7, 3\)"):
        now_scan_to_mesh(np.zeros((10, 3)), lmks(1.0), np.zeros((3, 3)), np.array([[0, 1, 2]]), np.zeros((5, 3)))
    with pytest.raises(FileNotFoundError, match="image list"):
        evaluate_now(tmp_path, tmp_path, progress=False)
    with pytest.raises(ValueError, match="split"):
        evaluate_now(tmp_path, tmp_path, split="train", progress=False)


def _strict_json(path):
    "json.loads that refuses NaN / Infinity (which Python's json accepts by default, but JSON does not)."
    def bad(c): raise ValueError(f"{path}: {c} is not valid JSON")
    return json.loads(Path(path).read_text(), parse_constant=bad)


def test_cli_lists_missing_predictions_and_fails_unless_allowed(tmp_path, capsys):
    # issue 17: with a prediction missing, a challenge's row just disappeared and the exit code was 0
    from headbook.cli import main
    lines = make_now(tmp_path / "NoW", tmp_path / "pred")
    args = ["eval", "now", "--dataset", str(tmp_path / "NoW"), "--pred", str(tmp_path / "pred")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "| multiview_occlusions | 0 | — | — | — | 1 |" in out and "| all | 3 |" in out
    assert f"missing: {lines[2]}" in out and "1 of 4 images have no prediction" in out
    js = _strict_json(tmp_path / "pred" / "results" / "headbook_summary.json")
    assert js["num_missing_files"] == 1
    assert main(args + ["--allow-missing"]) == 0


def test_empty_predictions_folder_is_a_clear_error(tmp_path, capsys):
    from headbook.cli import main
    make_now(tmp_path / "NoW", tmp_path / "unused")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="none of the 4 images of the validation list has a prediction"):
        evaluate_now(tmp_path / "NoW", tmp_path / "empty", progress=False)
    assert main(["eval", "now", "--dataset", str(tmp_path / "NoW"), "--pred", str(tmp_path / "empty")]) == 2
    assert "has a prediction in" in capsys.readouterr().err
    assert not any((tmp_path / "empty").iterdir())                       # no table of NaN, no summary written


def test_summary_json_has_no_nan(tmp_path):
    from headbook.data.now import write_now_results
    from headbook.eval.now import now_result
    res = now_result("m", "validation", False, [], [], [], ["S1/selfie/IMG_1.jpg"])   # nothing evaluated: NaN stats
    write_now_results(res, tmp_path)
    js = _strict_json(tmp_path / "m_summary.json")
    assert js["overall"]["median"] is None and js["missing"] == ["S1/selfie/IMG_1.jpg"]


@pytest.mark.parametrize("factor, unit", [(1000.0, "mm"), (100.0, "cm")])
def test_metrical_refuses_predictions_in_another_unit(tmp_path, factor, unit):
    # issue 17: millimetre predictions read as metres gave a plausible 12.6 mm
    root, pred = tmp_path / "NoW", tmp_path / "pred"
    make_now(root, pred)
    for obj in pred.rglob("*.obj"):                                     # the same heads, in mm (or cm) instead of m
        v, f = read_mesh(obj); write_prediction(pred, "/".join(obj.with_suffix(".jpg").parts[-3:]), v * factor, f,
                                                np.load(obj.with_suffix(".npy")) * factor)
    with pytest.raises(ValueError, match=rf"IMG_1.obj: read in m, the prediction is {factor:g}x the scan's size: "
                                         rf"its unit looks like {unit}"):
        evaluate_now(root, pred, metrical=True, unit="m", out_dir=False, progress=False)
    r = evaluate_now(root, pred, metrical=True, unit=unit, out_dir=False, progress=False)   # the right unit: fine
    assert r.overall.median < 1e-3


def test_nan_vertices_or_landmarks_are_refused_by_file_name(tmp_path):
    root, pred = tmp_path / "NoW", tmp_path / "pred"
    lines = make_now(root, pred)
    obj = pred / "S1" / "selfie" / "IMG_2.obj"
    v, f = read_mesh(obj); v[5] = np.nan
    write_prediction(pred, lines[1], v, f, np.load(obj.with_suffix(".npy")))
    with pytest.raises(ValueError, match=r"IMG_2.obj: 1 of \d+ vertices are NaN or infinite"):
        evaluate_now(root, pred, out_dir=False, progress=False)
    l = np.load(obj.with_suffix(".npy")); l[0, 0] = np.nan
    np.save(obj.with_suffix(".npy"), l)
    with pytest.raises(ValueError, match=r"IMG_2.npy contains NaN"):
        read_landmarks(obj.with_suffix(".npy"))
    with pytest.raises(ValueError, match="pred_lmks contains NaN"):
        now_scan_to_mesh(v, lmks(30.0), v, f, l)
