"Synthetic NoW: exact layout, determinism, .pp round trip, oracle at the noise floor and below the mean head, occluders, ICT skip."
import hashlib, json
from pathlib import Path
import numpy as np, pytest
import headbook.data.now as dnow
from headbook.data.now import write_synthetic_now, mean_head_predictions, oracle_predictions, paint_occluder
from headbook.eval.now import NOW_CHALLENGES
from headbook.data.now import evaluate_now, read_now_split, read_pp, read_mesh, write_pp


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("now") / "NoW"
    s = write_synthetic_now(root, n_subjects=2, images_per_challenge=1, seed=3, models=("synthhead",),
                            validation_subjects=1, scan_min_vertices=15_000, image_size=96)
    return root, s


def test_layout_is_nows(small):
    root, s = small
    assert (root / "imagepathsvalidation.txt").exists() and (root / "imagepathstest.txt").exists()
    val, test = read_now_split(root, "validation"), read_now_split(root, "test")
    assert len(val) == 4 and len(test) == 4 and {it.challenge for it in val} == set(NOW_CHALLENGES)
    for it in val + test:
        assert it.line == f"{it.subject}/{it.challenge}/{it.stem}.jpg" and it.stem.startswith("IMG_")
        assert it.image_path == root / "final_release_version" / "iphone_pictures" / it.subject / it.challenge / f"{it.stem}.jpg"
        assert it.image_path.read_bytes()[:2] == b"\xff\xd8"                                   # a JPEG
        assert it.crop_path == root / "final_release_version" / "detected_face" / it.subject / it.challenge / f"{it.stem}.npy"
        box = np.load(it.crop_path, allow_pickle=True, encoding="latin1").item()                # as DECA/MICA read it
        assert set(box) == {"left", "right", "top", "bottom"} and 0 <= box["left"] < box["right"] <= 96
        assert it.scan_path.parent == root / "scans" / it.subject and it.scan_path.suffix == ".obj"
        assert it.scan_lmk_path.name == it.scan_path.stem + "_picked_points.pp"
        assert it.scan_lmk_path.parent == root / "scans_lmks_onlypp" / it.subject
    v, f = read_mesh(val[0].scan_path)
    assert len(v) >= 15_000 and 150 < np.ptp(v, axis=0).max() < 400                           # millimetres
    assert set(s.subjects.values()) == {"synthhead"} and s.skipped == {}


def test_deterministic_under_seed(small, tmp_path):
    root, _ = small
    write_synthetic_now(tmp_path / "again", n_subjects=2, images_per_challenge=1, seed=3, models=("synthhead",),
                        validation_subjects=1, scan_min_vertices=15_000, image_size=96)
    digest = lambda r: {str(p.relative_to(r)): hashlib.sha1(p.read_bytes()).hexdigest()
                        for p in sorted(r.rglob("*")) if p.is_file() and p.name != "summary.json"}
    a, b = digest(root), digest(tmp_path / "again")
    assert a == b and len(a) > 20
    write_synthetic_now(tmp_path / "other", n_subjects=1, images_per_challenge=1, seed=4, models=("synthhead",),
                        scan_min_vertices=15_000, image_size=96)
    c = digest(tmp_path / "other")
    k = "scans_lmks_onlypp/SYN_synthhead_000/neutral_scan.000001_picked_points.pp"
    assert a[k] != c[k]


def test_pp_round_trip_and_landmarks_on_scan(small, tmp_path):
    root, _ = small
    it = read_now_split(root)[0]
    L = read_pp(it.scan_lmk_path); v, _ = read_mesh(it.scan_path)
    assert L.shape == (7, 3)
    assert np.allclose(read_pp(write_pp(tmp_path / "x.pp", L)), L, atol=1e-6)
    # each landmark lies on the (noisy, densified) scan surface: within a few noise sigmas of a vertex
    d = np.min(np.linalg.norm(v[None] - L[:, None], axis=-1), axis=1)
    assert d.max() < 3.0
    gt = np.load(root / "groundtruth" / it.subject / "identity.npz")
    assert str(gt["model"]) == "synthhead" and gt["neutral_verts"].shape[1] == 3


def test_oracle_at_noise_floor_and_better_than_mean_head(small, tmp_path):
    root, s = small
    assert oracle_predictions(root, tmp_path / "oracle") == 4 and mean_head_predictions(root, tmp_path / "mean") == 4
    ro = evaluate_now(root, tmp_path / "oracle", method_name="oracle", progress=False, out_dir=False, challenge="selfie")
    rm = evaluate_now(root, tmp_path / "mean", method_name="mean", progress=False, out_dir=False, challenge="selfie")
    # half-normal median of the scan noise is 0.674 sigma
    assert abs(ro.overall.median - 0.674 * s.noise_mm) < 0.2 * s.noise_mm
    assert rm.overall.median > 2 * ro.overall.median


def test_occlusions_occlude(small):
    root, _ = small
    for it in read_now_split(root, "validation") + read_now_split(root, "test"):
        g = json.loads((root / "groundtruth" / it.subject / it.challenge / f"{it.stem}.json").read_text())
        if it.challenge == "multiview_occlusions":
            assert g["occluder"]["kind"] in ("band", "blob", "rect") and g["occluder"]["pixels"] > 0.02 * 96 * 96
        else:
            assert g["occluder"] is None
    img = np.full((64, 64, 3), 0.5); L = np.zeros((68, 2)); L[:, 0] = np.linspace(16, 48, 68); L[:, 1] = 32
    L[36], L[45] = [20, 26], [44, 26]; L[48:68] = [[32, 44]] * 20
    o, m, _ = paint_occluder(img, L, np.random.default_rng(0), kind="band")
    assert m[26, 32] and not np.allclose(o[26, 32], 0.5)                                    # over the eyes
    with pytest.raises(ValueError, match="kind"):
        paint_occluder(img, L, np.random.default_rng(0), kind="scarf")


def test_ict_skipped_with_reason_when_missing(tmp_path, monkeypatch):
    import headbook.models.ict as ict
    def missing(*a, **k): raise FileNotFoundError("ICT-FaceKit not found (looked in ../shared/ict-facekit)")
    monkeypatch.setattr(ict, "find_ict", missing); monkeypatch.setattr(ict, "_CACHE", {})
    monkeypatch.setattr(dnow, "_MODEL_CACHE", {k: v for k, v in dnow._MODEL_CACHE.items() if k != "ict"})
    s = write_synthetic_now(tmp_path / "n", n_subjects=1, images_per_challenge=1, models=("synthhead", "ict"),
                            scan_min_vertices=8_000, image_size=64, challenges=("selfie",))
    assert "ict" in s.skipped and "not available" in s.skipped["ict"] and "ICT-FaceKit" in s.skipped["ict"]
    assert list(s.subjects.values()) == ["synthhead"]
    with pytest.raises(FileNotFoundError, match="none of the head models"):
        write_synthetic_now(tmp_path / "m", n_subjects=1, models=("ict",), challenges=("selfie",))


@pytest.mark.skipif(not Path("/work/shared/ict-facekit").exists() and not (Path.cwd().parent / "shared" / "ict-facekit").exists(),
                    reason="ICT-FaceKit (../shared/ict-facekit) is not on this machine")
def test_ict_subject_written(tmp_path):
    s = write_synthetic_now(tmp_path / "n", n_subjects=2, images_per_challenge=1, image_size=64,
                            scan_min_vertices=8_000, challenges=("multiview_neutral",))
    assert sorted(s.subjects.values()) == ["ict", "synthhead"] and s.skipped == {}


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="challenges"):
        write_synthetic_now(tmp_path, challenges=("portrait",))
    with pytest.raises(ValueError, match="n_subjects"):
        write_synthetic_now(tmp_path, n_subjects=0)
    with pytest.raises(FileNotFoundError, match="ground truth"):
        (tmp_path / "x").mkdir(); (tmp_path / "x" / "imagepathsvalidation.txt").write_text("S/selfie/IMG_1.jpg\n")
        oracle_predictions(tmp_path / "x", tmp_path / "p")
