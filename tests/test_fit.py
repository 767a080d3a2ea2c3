"Tests for fit.photometric and fit.reconstruct (synthhead fixtures; no network, no licence)."
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from headbook.fit import FitConfig, PRESETS, fit_photometric, reconstruct
from headbook.data.scene import synthetic_scene
from headbook.eval.vertex import neutral_vertex_error
from headbook.models import load_head_model

FAST = FitConfig(rigid_iters=10, full_iters=12, lr=0.01, lr_light=0.02, lr_camera=0.002, raster_every=4, progress=False)


@pytest.fixture(scope="module")
def head():
    return load_head_model("synthhead")


@pytest.fixture(scope="module")
def scene(head):
    return synthetic_scene(head, batch=1, seed=0)


def test_loss_decreases(head, scene):
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, FAST)
    r, f = res.history["rigid"], res.history["full"]
    assert len(r) == 10 and len(f) == 12
    assert r[-1]["landmark_static"] < r[0]["landmark_static"]
    assert f[-1]["photometric"] < 0.7 * f[0]["photometric"]
    assert f[-1]["landmark"] < f[0]["landmark"]
    assert res.render.shape == (1, 3, 224, 224) and res.render_mask.shape == (1, 1, 224, 224)
    assert res.vertices.shape == (1, head.n_verts, 3) and res.sh.shape == (1, 9, 3)
    assert set(res.parameters) >= {"shape", "expression", "global_pose", "jaw_pose", "left_eye_pose", "right_eye_pose", "tex", "cam"}


def test_synthetic_recovery_smoke(head, scene):
    # measured 2026-11-21 with the smoke preset (seed 0): 1.0 px landmarks, 3.2 mm neutral median vs 3.8 mm for
    # the template; the thresholds leave a margin for thread-count noise, not for a worse optimiser
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, replace(PRESETS["smoke"], progress=False))
    lmk = (res.landmarks2d - scene.landmarks68).norm(dim=-1).mean(1)
    geo = neutral_vertex_error(head, res.parameters["shape"], scene.params["shape"])
    base = neutral_vertex_error(head, torch.zeros_like(scene.params["shape"]), scene.params["shape"])
    assert lmk.item() < 1.5, lmk
    assert geo.item() < 0.95 * base.item(), (geo, base)


def test_truth_is_kept_and_lm_refine_lowers_energy(head, scene):
    # started at the true parameters, one Adam step stays there (measured 2026-11-21: 0.07 mm; LM from there
    # moves the identity by 1.5 mm while lowering the energy: the chapter's single-photo ambiguity)
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head,
                          replace(FAST, rigid_iters=0, full_iters=1), init=scene.params)
    assert neutral_vertex_error(head, res.parameters["shape"], scene.params["shape"]).item() < 0.3
    # from the template: every accepted LM step lowers the energy, and the landmarks end closer than after Adam
    cfg = replace(FAST, refine_iters=2)
    adam = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, replace(cfg, refine_iters=0))
    lm = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, cfg)
    e = [h["energy"] for h in lm.history["refine"]]
    assert len(e) == 2 and e[1] <= e[0] and lm.timings["refine"] > 0
    err = lambda r: (r.landmarks2d - scene.landmarks68).norm(dim=-1).mean().item()
    assert err(lm) < err(adam), (err(lm), err(adam))
    with pytest.raises(ValueError, match="init: unknown parameter 'colour'"):
        fit_photometric(scene.images, scene.landmarks68, scene.masks, head, FAST, init={"colour": torch.zeros(1, 3)})


def test_neutral_vertex_error_region(head, scene):
    gt = scene.params["shape"]
    face = torch.zeros(head.n_verts, dtype=torch.bool); face[::2] = True
    assert neutral_vertex_error(head, gt, gt, face).item() < 1e-6
    assert neutral_vertex_error(head, torch.zeros_like(gt), gt, face).item() > 0.5
    with pytest.raises(ValueError, match="region must be a bool mask"):
        neutral_vertex_error(head, gt, gt, face[:10])
    # NoW's face crop of the true head: exact for the truth, the template is off, a wrong name is refused
    assert neutral_vertex_error(head, gt, gt, "now").item() < 1e-6
    now, whole = neutral_vertex_error(head, torch.zeros_like(gt), gt, "now"), neutral_vertex_error(head, torch.zeros_like(gt), gt)
    assert now.item() > 0.5 and now.item() != whole.item()
    with pytest.raises(ValueError, match="'now' or None"):
        neutral_vertex_error(head, gt, gt, "face")


def test_model_saturates_like_the_photo(head, scene):
    # about 1.4 % of the skin pixel-channels of this scene clip at 1; the fit's render clips too, so at the true
    # parameters the photometric term is ~0 (measured 1e-5) and far below the seed's identity prior (2.5e-3)
    assert ((scene.images >= 0.999) & (scene.masks > 0.5)).sum() > 100
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head,
                          replace(FAST, rigid_iters=0, full_iters=1), init=scene.params)
    h = res.history["full"][0]
    assert h["landmark"] < 1e-6 and h["photometric"] < 3e-5 and h["shape_reg"] > 100 * h["photometric"], h


def test_perspective_camera(head, scene):
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, replace(FAST, camera="perspective"))
    assert res.camera["model"] == "perspective" and res.camera["translation"].shape == (1, 3)
    assert res.camera["translation"][0, 2] > 0.5                    # the camera stands in front of the face
    assert (res.landmarks2d - scene.landmarks68).norm(dim=-1).mean() < 3.0


def test_free_albedo_without_basis(scene):
    m = load_head_model("synthhead"); m.albedo_basis = None       # an ICT-like model: no albedo space
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, m, replace(FAST, rigid_iters=3, full_iters=6))
    assert "albedo_smooth" in res.history["full"][0] and "tex" not in res.parameters
    assert res.albedo.shape == (1, m.n_verts, 3)
    assert res.history["full"][-1]["photometric"] < res.history["full"][0]["photometric"]


def test_nan_stops_with_step_and_term(head, scene):
    # it stops at the step where a loss term or a parameter (refused by the head model) stops being finite or sane
    with pytest.raises(FloatingPointError, match=r"(loss term '(landmark_static|landmark)'|global_pose has a value).*step \d+"):
        fit_photometric(scene.images, scene.landmarks68, scene.masks, head, replace(FAST, lr=1e30, lr_camera=1e30))


def test_bad_inputs(head, scene):
    with pytest.raises(ValueError, match=r"landmarks68 must have shape \[1, 68, 2\]"):
        fit_photometric(scene.images, scene.landmarks68[:, :51], scene.masks, head, FAST)
    with pytest.raises(ValueError, match=r"images must lie in \[0.0, 1.0\]"):
        fit_photometric(scene.images * 255, scene.landmarks68, scene.masks, head, FAST)
    with pytest.raises(ValueError, match="square"):
        fit_photometric(scene.images[..., :200], scene.landmarks68, scene.masks[..., :200], head, FAST)
    bad = scene.landmarks68.clone(); bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="landmarks68 contains NaN"):
        fit_photometric(scene.images, bad, scene.masks, head, FAST)
    with pytest.raises(ValueError, match="camera must be"):
        fit_photometric(scene.images, scene.landmarks68, scene.masks, head, replace(FAST, camera="fisheye"))


def test_reconstruct_good_and_bad(tmp_path, head):
    import mediapipe  # noqa: F401  (pinned: fail, do not skip, when missing)
    from matplotlib import cbook
    good = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    bad = tmp_path / "broken.png"; bad.write_bytes(b"\x89PNG not really")
    missing = tmp_path / "nowhere.jpg"
    # with two camera-scale starts, so that fit.json also carries the screening history
    cfg = replace(FAST, full_iters=8, scale_starts=(0.93, 1.08), screen_iters=2)
    res = reconstruct([bad, good, missing], head, tmp_path / "out", preset=cfg, progress=False)
    assert [r.ok for r in res] == [False, True, False]
    assert "broken.png" in res[0].error and "nowhere.jpg" in res[2].error
    out = tmp_path / "out" / "grace_hopper"
    assert res[1].out_dir == out
    assert sorted(p.name for p in out.iterdir()) == ["fit.json", "mesh.obj", "overlay.png", "params.npz", "viewer.html"]
    info = json.loads((out / "fit.json").read_text())
    for k in ("photo", "model", "preset", "crop", "landmarks_detected", "landmarks_fitted", "landmark_nme",
              "interocular_px", "loss_history", "timings"):
        assert k in info, k
    det, fit = np.array(info["landmarks_detected"]), np.array(info["landmarks_fitted"])
    assert det.shape == fit.shape == (68, 2)
    H, W = info["image_size"]
    assert (det[:, 0] > 0).all() and (det[:, 0] < W).all() and (det[:, 1] < H).all()   # photo pixels, not crop pixels
    assert np.isclose(info["landmark_nme"], np.linalg.norm(fit - det, axis=1).mean() / np.linalg.norm(det[36] - det[45]))
    assert info["landmark_nme"] < 0.2 and len(info["loss_history"]["full"]) == 8
    assert [h["scale"] for h in info["loss_history"]["screen"]] == [0.93, 1.08] and info["loss_history"]["screen_choice"][0] in (0, 1)
    p = np.load(out / "params.npz")
    assert {"shape", "expression", "global_pose", "jaw_pose", "tex", "sh", "cam", "crop_scale"} <= set(p.files)
    assert p["shape"].shape == (head.n_shape,) and p["sh"].shape == (9, 3)
    from headbook.geometry.mesh import load_mesh
    v, f = load_mesh(out / "mesh.obj")
    assert v.shape == (head.n_verts, 3) and f.shape == tuple(head.faces.shape)
    assert "<html" in (out / "viewer.html").read_text()[:2000].lower()


def test_reconstruct_bad_preset(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        reconstruct([], "synthhead", tmp_path, preset="fast")
    with pytest.raises(ValueError, match="needs a head mask"):                  # reconstruct has no head masks
        reconstruct([], "synthhead", tmp_path, preset="outline")


def test_outline_term(head, scene):
    from headbook.render.silhouette import mask_distance, outer_silhouette, sample_map
    from headbook.geometry.mesh import edge_faces
    from headbook.geometry.cameras import weak_perspective_project, ndc_to_pixels
    from headbook.render.mesh import render_mesh_weak_perspective
    p = scene.params
    out = head(shape=p["shape"], expression=p["expression"], global_pose=p["global_pose"])
    p2f = render_mesh_weak_perspective(out.vertices, head.faces, p["cam"], (224, 224)).fragments.pix_to_face[..., 0]
    dist = mask_distance(scene.head_masks, "outline")
    edges, efaces = edge_faces(head.faces)
    uv = ndc_to_pixels(weak_perspective_project(out.vertices, p["cam"]), (224, 224))
    on = outer_silhouette(uv, head.faces, edges, efaces, p2f)
    mean_d = lambda c: (sample_map(dist, ndc_to_pixels(weak_perspective_project(out.vertices, c), (224, 224))) * on).sum() / on.sum()
    # at the truth the outer silhouette lies on the photo's outline (measured 0.85 px: pixel quantisation),
    # and moves off it when the head is drawn 5 % smaller or larger
    small, big = p["cam"].clone(), p["cam"].clone(); small[:, 0] *= 0.95; big[:, 0] *= 1.05
    assert on.sum() > 100 and mean_d(p["cam"]) < 1.0
    assert mean_d(small) > 2 * mean_d(p["cam"]) and mean_d(big) > 2 * mean_d(p["cam"])
    # the interior contours (nose, eyes) are not in the set: every kept vertex is within 3 px of the outline
    assert sample_map(dist, uv)[on].max() < 3.0
    # forward- and reverse-mode derivatives of the lookup agree (the LM stage uses forward mode)
    x = (uv[0, on[0]][:20] + 0.3).double()
    f = lambda y: sample_map(dist.double()[:1], y[None])[0]
    v = torch.randn_like(x)
    jv = torch.func.jvp(f, (x,), (v,))[1]
    J = torch.autograd.functional.jacobian(f, x)                              # [20, 20, 2]
    assert torch.allclose(jv, torch.einsum("nmk,mk->n", J, v), atol=1e-9)
    assert J.abs().sum() > 0


def test_outline_fit_and_bad_inputs(head, scene):
    cfg = replace(FAST, w_silhouette=1.0, refine_iters=1)
    res = fit_photometric(scene.images, scene.landmarks68, scene.head_masks, head, cfg, head_masks=scene.head_masks)
    f = res.history["full"]
    assert f[-1]["silhouette"] < f[0]["silhouette"] and len(res.history["refine"]) == 1
    with pytest.raises(ValueError, match="w_silhouette > 0 needs head_masks"):
        fit_photometric(scene.images, scene.landmarks68, scene.masks, head, cfg)
    with pytest.raises(ValueError, match=r"head_masks must have shape \[1, 1, 224, 224\]"):
        fit_photometric(scene.images, scene.landmarks68, scene.masks, head, cfg, head_masks=scene.head_masks[:, :, :100])


def test_multi_start_keeps_the_lowest_energy(head):
    sc = synthetic_scene(head, batch=2, seed=1)
    cfg = replace(FAST, scale_starts=(0.85, 1.0, 1.17), screen_iters=6)
    res = fit_photometric(sc.images, sc.landmarks68, sc.masks, head, cfg)
    E = torch.tensor([h["energy"] for h in res.history["screen"]])            # [3 starts, 2 photos]
    assert E.shape == (3, 2) and res.history["screen_choice"] == E.argmin(0).tolist()
    assert len(res.history["rigid"]) == FAST.rigid_iters and len(res.history["full"]) == FAST.full_iters
    assert res.energy.shape == (2,) and torch.isfinite(res.energy).all()
    # one identity for the batch: one start for all photos, the one with the lowest total
    shared = fit_photometric(sc.images, sc.landmarks68, sc.masks, head, replace(cfg, shared_identity=True))
    Es = torch.tensor([h["energy"] for h in shared.history["screen"]]).sum(1)
    assert shared.history["screen_choice"] == [int(Es.argmin())] * 2
    with pytest.raises(ValueError, match="scale_starts must be positive"):
        fit_photometric(sc.images, sc.landmarks68, sc.masks, head, replace(cfg, scale_starts=(1.0, -1.0)))


def test_energy_is_the_full_stage_energy(head, scene):
    # FitResult.energy is the sum of the full-stage terms at the returned parameters: a step of size ~0 shows it
    still = replace(FAST, rigid_iters=0, full_iters=1, lr=1e-12, lr_light=1e-12, lr_camera=1e-12)
    res = fit_photometric(scene.images, scene.landmarks68, scene.masks, head, still, init=scene.params)
    assert res.energy.item() == pytest.approx(sum(res.history["full"][0].values()), rel=1e-4)


def test_lm_stage_uses_the_one_energy(head):
    # the LM stage evaluates the same energy as the Adam stage and FitResult, rasterised with each trial's own camera:
    # its last accepted energy is the energy of the returned parameters, and it never goes up
    sc = synthetic_scene(head, batch=2, seed=5)
    for extra in ({}, {"shared_identity": True}, {"camera": "perspective"}):
        res = fit_photometric(sc.images, sc.landmarks68, sc.masks, head, replace(FAST, refine_iters=3, **extra))
        e = [h["energy"] for h in res.history["refine"]]
        assert len(e) == 3 and all(b <= a * (1 + 1e-6) for a, b in zip(e, e[1:]))
        assert res.energy.sum().item() == pytest.approx(e[-1], rel=1e-5)
        assert e[0] <= sum(res.history["full"][-1].values()) * 1.05        # LM starts where Adam stopped (one step later)


def test_shared_identity(head):
    sc = synthetic_scene(head, batch=2, seed=3, same_identity=True)
    assert torch.equal(sc.params["shape"][0], sc.params["shape"][1])
    assert not torch.equal(sc.params["expression"][0], sc.params["expression"][1])
    cfg = replace(FAST, shared_identity=True, refine_iters=2)
    res = fit_photometric(sc.images, sc.landmarks68, sc.masks, head, cfg)
    beta = res.parameters["shape"]
    assert beta.shape == (2, head.n_shape) and torch.equal(beta[0], beta[1])          # one identity for the batch
    assert not torch.equal(res.parameters["expression"][0], res.parameters["expression"][1])
    e = [r["energy"] for r in res.history["refine"]]
    assert len(e) == 2 and e[1] <= e[0]                                                # the joint LM step lowers the energy
    # the identity prior is counted once, not once per photo (history holds the value before the last Adam step)
    adam = fit_photometric(sc.images, sc.landmarks68, sc.masks, head, replace(cfg, refine_iters=0))
    once = FAST.w_shape_reg * adam.parameters["shape"][0].pow(2).sum().item() / 2
    assert 0.8 < adam.history["full"][-1]["shape_reg"] / once < 1.25
    assert res.vertices.shape == (2, head.n_verts, 3) and res.landmarks2d.shape == (2, 68, 2)


def test_reconstruct_same_person(tmp_path, head):
    import shutil
    from matplotlib import cbook
    src = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    shutil.copy(src, a)
    from PIL import Image
    Image.open(src).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(b)          # the same person, mirrored
    res = reconstruct([a, b], head, tmp_path / "out", preset=replace(FAST, full_iters=6), progress=False, same_person=True)
    assert [r.ok for r in res] == [True, True]
    pa, pb = np.load(tmp_path / "out" / "a" / "params.npz"), np.load(tmp_path / "out" / "b" / "params.npz")
    assert np.array_equal(pa["shape"], pb["shape"]) and np.abs(pa["shape"]).max() > 0       # one fitted identity
    assert not np.array_equal(pa["global_pose"], pb["global_pose"])                       # each photo its own pose


def test_reconstruct_refuses_an_unavailable_device(tmp_path):
    # issue 17: `--device cuda` without a GPU ended in a torch traceback
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available here"):
            reconstruct([], "synthhead", tmp_path, device="cuda")
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        reconstruct([], "synthhead", tmp_path, device="banana")
    assert not any(tmp_path.iterdir())                                          # nothing written
