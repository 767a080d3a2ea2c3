"Video tracking (fit.track): error against a synthetic clip's truth, the temporal term, the written layout, bad folders."
import json, shutil
from dataclasses import replace
from pathlib import Path
import numpy as np
import pytest
import torch
from headbook.models import load_head_model
from headbook.data.avatar import TalkingHeadSpec, write_talking_head, read_avatar_video
from headbook.fit.track import (TRACK_PRESETS, track_video, track_folder, read_video_folder, jitter, video_crop,
                                temporal_energy)
from headbook.geometry.cameras import project_points

T, S = 12, 48
CFG = replace(TRACK_PRESETS["smoke"], image_size=S, progress=False)


@pytest.fixture(scope="module")
def head():
    return load_head_model("synthhead")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, head):
    root = write_talking_head(tmp_path_factory.mktemp("track") / "clip", head,
                              TalkingHeadSpec(n_train=T, n_test=2, image_size=S), seed=3)
    v = read_avatar_video(root / "train")
    lm = torch.stack([torch.from_numpy(np.load(root / "train" / "landmarks" / f"{s}.npy")) for s in v.stems])
    return root, v, lm


def _errors(r, v, lm):
    return dict(lmk=float((r.landmarks2d - lm).norm(dim=-1).mean()),
                jaw=float((r.params["jaw_pose"][:, 0] - v.params["jaw_pose"][:, 0]).abs().mean()))


def test_tracking_lowers_the_error_against_the_truth(clip, head):
    root, v, lm = clip
    start = track_video(v.images, lm, v.masks, head, replace(CFG, fit=replace(CFG.fit, full_iters=0), smooth_iters=0))
    res = track_video(v.images, lm, v.masks, head, CFG)
    e0, e1 = _errors(start, v, lm), _errors(res, v, lm)
    assert e1["lmk"] < 0.7 * e0["lmk"], (e0, e1)          # landmarks: below 70 % of the mean-shape start's error
    assert e1["jaw"] < 0.6 * e0["jaw"], (e0, e1)          # the start has the jaw shut
    assert res.params["shape"].shape == (1, head.n_shape) and res.params["expression"].shape == (T, head.n_expr)
    for k in ("global_pose", "neck_pose", "jaw_pose", "left_eye_pose", "right_eye_pose", "translation"):
        assert res.params[k].shape == (T, 3)
    assert torch.allclose(res.K, v.K, atol=1e-3)           # the focal is given and the crop is centred: K is the truth
    assert abs(float(res.t[2]) - 1.6) < 0.15               # distance within 10 % (identity and depth trade off)


@pytest.fixture(scope="module")
def noisy_runs(clip, head):
    root, v, lm = clip
    noisy = lm + 1.0 * torch.randn(lm.shape, generator=torch.Generator().manual_seed(0))
    cfg = replace(CFG, smooth_iters=40)
    return {w: track_video(v.images, noisy, v.masks, head, replace(cfg, w_smooth=w, w_smooth_trans=w and 100.0))
            for w in (0.0, 0.3)}


def test_temporal_term_reduces_jitter_without_losing_accuracy(clip, noisy_runs):
    root, v, lm = clip
    free, smooth = noisy_runs[0.0], noisy_runs[0.3]
    for k in ("jaw_pose", "global_pose", "expression"):
        assert jitter(smooth.params[k]) < jitter(free.params[k]), k
    assert jitter(smooth.params["translation"]) < 0.5 * jitter(free.params["translation"])
    # against the exact landmarks the smoothed track is no worse than the frame-by-frame one. Measured over noise seeds
    # 0-5 (1 px detector noise) on the dev machine: lower on all six, by 1.6-23 %; on seed 0, the one used here, the
    # margin is 1.6 % and CI's CPU reversed it (0.357 vs 0.355 px) — so the test asks for "no worse", not "better".
    e_free, e_smooth = _errors(free, v, lm)["lmk"], _errors(smooth, v, lm)["lmk"]
    assert e_smooth < 1.03 * e_free, (e_free, e_smooth)
    assert e_smooth < 0.5                                  # half the detector noise's σ: the fit averages the noise out
    h = smooth.history["smooth"]
    assert len(h) == 40 and h[-1]["smooth"] < h[0]["smooth"]


def test_fixed_camera_and_translation_reproduce_the_per_frame_cameras(noisy_runs, head):
    "R(X + τ_t) + t_0 = R X + t_t: the written layout projects the tracked head where pass 2 put it."
    r = noisy_runs[0.3]
    with torch.no_grad():
        out = head(**{k: (v.expand(T, -1) if k == "shape" else v) for k, v in r.params.items()})
    uv = project_points(out.landmarks, r.K.expand(T, 3, 3), r.R.expand(T, 3, 3), r.t.expand(T, 3))[0]
    assert (uv - r.landmarks2d).abs().max() < 1e-3


def test_crop_and_temporal_helpers():
    C = video_crop(torch.tensor([[[10., 10.], [20., 30.]]]), 64, 32)
    assert abs(C.x0 + 16 / C.scale - 32) < 1e-9 and abs(C.y0 + 16 / C.scale - 32) < 1e-9
    assert float(temporal_energy(torch.tensor([[1.], [1.], [1.]]))) == 0.0
    with pytest.raises(ValueError, match="x"): temporal_energy(torch.zeros(3))
    with pytest.raises(ValueError, match="landmarks"): video_crop(torch.full((1, 2, 2), float("nan")), 64, 32)


def test_track_folder_writes_what_read_avatar_video_and_the_trainer_read(clip, head, tmp_path):
    from headbook.imavatar.train import imavatar_config, prepare_data
    root, v, lm = clip
    out = tmp_path / "tracked"
    rep = track_folder(root / "train", out, head, CFG, n_test=3)
    tr, te = read_avatar_video(out / "train"), read_avatar_video(out / "test")
    assert (len(tr), len(te)) == (T - 3, 3) and rep["frames"] == T and rep["n_test"] == 3
    assert (tr.images - v.images[:T - 3]).abs().max() < 1 / 255 + 1e-6 and torch.equal(tr.masks, v.masks[:T - 3])
    assert torch.equal(tr.params["shape"], te.params["shape"]) and torch.equal(tr.K, te.K)
    assert json.loads((out / "train" / "stems.json").read_text()) == v.stems[:T - 3]
    meta = json.loads((out / "avatar.json").read_text())
    assert meta["head_model"] == "synthhead" and meta["n_test"] == 3
    assert prepare_data(imavatar_config("smoke", {"data.root": str(out)}), tmp_path) == out
    assert rep["landmark_error_px_mean"] < 1.0          # pixels at 48 px, exact landmarks
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no staging folder left


def _copy(root: Path, dst: Path) -> Path:
    shutil.copytree(root / "train", dst)
    return dst


def _refused(tmp_path, video, exc, match, **kw):
    out = tmp_path / "out"
    with pytest.raises(exc, match=match): track_folder(video, out, "synthhead", CFG, **kw)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_folders_get_clear_errors_and_write_nothing(clip, tmp_path):
    root, v, lm = clip
    empty = tmp_path / "empty"; (empty / "frames").mkdir(parents=True)
    _refused(tmp_path, empty, FileNotFoundError, "holds no images")
    _refused(tmp_path, tmp_path / "nowhere", FileNotFoundError, "does not exist")
    a = _copy(root, tmp_path / "a"); (a / "masks" / "000004.png").unlink()
    _refused(tmp_path, a, FileNotFoundError, r"no head mask .*masks/000004\.png")
    b = _copy(root, tmp_path / "b"); (b / "frames" / "000011.png").unlink()
    _refused(tmp_path, b, ValueError, "counts of frames/ and masks/ do not match")
    c = _copy(root, tmp_path / "c"); np.save(c / "landmarks" / "000002.npy", np.zeros((5, 2), np.float32))
    _refused(tmp_path, c, ValueError, r"000002\.npy has shape \[5, 2\]")
    d = _copy(root, tmp_path / "d"); l = np.load(d / "landmarks" / "000001.npy"); l[3] = np.nan
    np.save(d / "landmarks" / "000001.npy", l)
    _refused(tmp_path, d, ValueError, "frame 000001 hold NaN")
    e = _copy(root, tmp_path / "e")
    from PIL import Image
    Image.new("RGB", (S, S + 2)).save(e / "frames" / "000000.png")
    _refused(tmp_path, e, ValueError, "must be square")
    _refused(tmp_path, root / "train", ValueError, r"n_test .* must be in \[0, 11\]", n_test=12)
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists"): track_folder(root / "train", tmp_path / "out", "synthhead", CFG)


def test_missing_landmarks_need_mediapipe_and_say_which_frame(clip, tmp_path, monkeypatch):
    import headbook.landmarks.detect as det
    root, v, lm = clip
    f = _copy(root, tmp_path / "f"); (f / "landmarks" / "000007.npy").unlink()
    def no_mediapipe(path): raise ImportError("No module named 'mediapipe'")
    monkeypatch.setattr(det, "detect_landmarks68", no_mediapipe)
    _refused(tmp_path, f, ValueError, r"frame 000007.*MediaPipe cannot run here")
    def no_face(path): raise det.NoFaceError(f"{path}: no face found")
    monkeypatch.setattr(det, "detect_landmarks68", no_face)
    _refused(tmp_path, f, ValueError, r"frame 000007: no landmarks .*no face found")
    v2 = read_video_folder(root / "train")                   # all landmark files present: no detection needed
    assert v2.landmark_source == "files" and torch.equal(v2.landmarks, lm)


def test_a_real_photo_panned_into_frames_is_detected_and_tracked(tmp_path):
    "MediaPipe's landmarks on real pixels (matplotlib's public-domain Grace Hopper photo, six windows of a slow pan)."
    from PIL import Image
    from matplotlib import cbook
    from headbook.landmarks import read_image
    rgb = read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).rgb
    d = tmp_path / "pan"
    for s in ("frames", "masks"): (d / s).mkdir(parents=True)
    side = min(rgb.shape[:2]) - 40
    for k in range(6):
        x0, y0 = 20 + 3 * k, 10 + 2 * k
        Image.fromarray(rgb[y0:y0 + side, x0:x0 + side]).resize((256, 256)).save(d / "frames" / f"{k:04d}.jpg")
        Image.fromarray(np.full((256, 256), 255, np.uint8)).save(d / "masks" / f"{k:04d}.png")
    v = read_video_folder(d)
    assert v.landmark_source == "detected" and v.landmarks.shape == (6, 68, 2)
    # the pan moves the photo 3 px left and 2 px up per window (times 256 / side after the resize)
    step = (v.landmarks[1:] - v.landmarks[:-1]).mean((0, 1)) * side / 256
    assert torch.allclose(step, torch.tensor([-3., -2.]), atol=0.5), step
    rep = track_folder(d, tmp_path / "out", "synthhead", replace(CFG, image_size=96), n_test=1)
    assert rep["landmarks"] == "detected" and rep["landmark_error_px_mean"] < 8.0     # 256 px frames; measured 4.4
    assert len(read_avatar_video(tmp_path / "out" / "train")) == 5
