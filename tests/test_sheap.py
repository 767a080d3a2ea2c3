"SHeaP: model outputs, loss, one step, training run, resume, checkpoints and the seed's TorchScript files."
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from headbook.data.video import VideoFrames, write_synthetic_videos, SyntheticVideoSpec
from headbook.sheap import load_sheap_model
from headbook.sheap.model import SHeaP, PARAM_KEYS, SEED_KEYS, reanimate, render_gaussians
from headbook.sheap.losses import photometric_loss, landmark_loss
from headbook.eval.image import ssim_map
from headbook.sheap.train import SHeaPStep, sheap_config, train_sheap, PRESETS
from headbook.train.loop import read_metrics, check_resume_exact


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_synthetic_videos(root, 2, spec=SyntheticVideoSpec(n_frames=4, image_size=32), seed=1, progress=False)
    return root


@pytest.fixture(scope="module")
def smoke_run(videos, tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    return train_sheap(sheap_config("smoke"), run_dir=d, data_root=videos, progress=False)


def test_video_reader_layout_and_errors(videos, tmp_path):
    vf = VideoFrames(videos, image_size=16)
    f = vf.frame(3)
    assert f["image"].shape == (3, 16, 16) and f["mask"].shape == (1, 16, 16) and f["landmarks"].shape == (68, 2)
    assert 0 <= f["image"].min() and f["image"].max() <= 1 and set(f["mask"].unique().tolist()) <= {0.0, 1.0}
    raw = VideoFrames(videos)
    assert torch.allclose(raw.frame(3)["landmarks"] / 2, f["landmarks"])       # landmarks follow the resize
    with pytest.raises(FileNotFoundError, match="no videos"): VideoFrames(tmp_path)
    bad = tmp_path / "v" / "frames"; bad.mkdir(parents=True)
    (bad / "000000.png").write_bytes((videos / "synthhead_0000" / "frames" / "000000.png").read_bytes())
    with pytest.raises(FileNotFoundError, match="landmarks"): VideoFrames(tmp_path)


def test_output_keys_and_shapes(smoke_run):
    m = load_sheap_model(smoke_run.run_dir)
    assert not m.training
    out = m(torch.rand(3, 3, 224, 224))
    S, E, V = m.head.n_shape, m.head.n_expr, m.head.n_verts
    expect = dict(shape=(3, S), expr=(3, E), global_pose=(3, 3), neck_pose=(3, 3), jaw_pose=(3, 3), left_eye_pose=(3, 3),
                  right_eye_pose=(3, 3), eyelids=(3, 2), cam_trans=(3, 3), light=(3, 9, 3), features=(3, m.cfg.feat_dim),
                  vertices=(3, V, 3), landmarks=(3, 68, 3))
    assert {k: tuple(v.shape) for k, v in out.items()} == expect
    assert set(PARAM_KEYS) <= set(out) and ((out["eyelids"] >= 0) & (out["eyelids"] <= 1)).all()
    assert all(torch.isfinite(v).all() for v in out.values())
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"): m(torch.rand(3, 224, 224))
    with pytest.raises(FileNotFoundError, match="no SHeaP checkpoint"): load_sheap_model(smoke_run.run_dir / "missing.pt")


def test_one_step_on_a_fixed_batch_lowers_the_loss_and_reaches_every_part(videos):
    torch.manual_seed(0)
    cfg = sheap_config("smoke")
    step = SHeaPStep(SHeaP(cfg.model), cfg.loss)
    batch = VideoFrames(videos, image_size=32).pair_batch(torch.tensor([1, 6]), salt=0)
    opt = torch.optim.Adam(step.parameters(), 1e-3)
    out = step(batch)
    out.losses["loss"].backward()
    m = step.model
    for name, p in (("shape head", m.to_shape.weight), ("pose head", m.to_pose.weight), ("light head", m.to_light.weight),
                    ("gaussian regressor", m.gaussians.out[-1].weight), ("ViT", m.encoder.embed.weight)):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step(); opt.zero_grad()
    after = step(batch).losses
    assert after["loss"] < out.losses["loss"]
    assert out.render.shape == (2, 3, 32, 32) and out.alpha.max() <= 1


def test_photometric_gradient_reaches_the_shape_through_the_gaussians(videos):
    "The paper's point: the render's loss alone moves the identity."
    torch.manual_seed(0)
    cfg = sheap_config("smoke")
    m = SHeaP(cfg.model)
    batch = VideoFrames(videos, image_size=32).pair_batch(torch.tensor([0]), salt=0)
    p = m.encode(torch.cat([batch["src_image"], batch["tgt_image"]]))
    ps = {k: v[:1] for k, v in p.items()}; pt = {k: v[1:] for k, v in p.items()}
    G = m.predict_gaussians(ps)
    gi = render_gaussians(m, G, m.head_output(reanimate(ps, pt)).vertices, pt["light"], 32)
    l = photometric_loss(gi.image, batch["tgt_image"], batch["tgt_mask"])["photo"]
    g = torch.autograd.grad(l, ps["shape"], retain_graph=True)[0]
    assert g.abs().sum() > 0


def test_losses_behave():
    x = torch.rand(2, 3, 24, 24)
    assert torch.allclose(ssim_map(x, x), torch.ones(2, 1, 24, 24), atol=1e-4)
    m = torch.ones(2, 1, 24, 24)
    assert photometric_loss(x, x, m)["photo"].abs() < 1e-4
    with pytest.raises(ValueError, match="mask"): photometric_loss(x, x, torch.ones(2, 24, 24))
    with pytest.raises(ValueError, match=r"\[B, L, 2\]"): landmark_loss(torch.zeros(2, 68, 3), torch.zeros(2, 68, 3), 24)


def test_smoke_run_writes_the_run_folder(smoke_run):
    rows = read_metrics(smoke_run.run_dir)
    assert [r["step"] for r in rows] == list(range(1, PRESETS["smoke"].steps + 1))
    assert all(np.isfinite(r["loss"]) for r in rows)
    d = smoke_run.run_dir
    assert (d / "config.json").exists() and (d / "checkpoints" / "step_0000003.pt").exists()
    assert (d / "samples" / "step_0000003.png").exists()


def test_resume_reproduces_the_uninterrupted_losses(videos, tmp_path):
    cfg = sheap_config("smoke", {"steps": 4, "ckpt_every": 2, "sample_every": 0})
    run = lambda d, stop: train_sheap(cfg, run_dir=d, data_root=videos, stop_after=stop, progress=False)
    r = check_resume_exact(run, tmp_path, stop_after=3)                 # killed after 3, resumed from 2
    assert r["rest"].resumed_from == 2


def test_resume_with_changed_settings_is_refused_then_applied(videos, tmp_path):
    # issue 17: resuming with a new lr rewrote config.json while the optimiser kept the checkpoint's lr
    import json
    from headbook.train.loop import ResumeSettingsError
    from headbook.sheap.train import _lr_lambda
    cfg = sheap_config("smoke", {"sample_every": 0})
    train_sheap(cfg, run_dir=tmp_path, data_root=videos, progress=False)                        # 3 steps
    new = sheap_config("smoke", {"sample_every": 0, "lr": 0.5, "steps": 5})
    with pytest.raises(ResumeSettingsError, match=r"lr 0.001 -> 0.5; steps 3 -> 5"):
        train_sheap(new, run_dir=tmp_path, data_root=videos, progress=False)
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 1e-3                    # left as it was
    res = train_sheap(new, run_dir=tmp_path, data_root=videos, progress=False, allow_changes=True)
    assert res.resumed_from == 3 and res.step == 5
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.5
    lrs = [r["lr"] for r in read_metrics(tmp_path)]
    assert lrs[3:] == pytest.approx([0.5 * _lr_lambda(new)(s) for s in (4, 5)])                # the new settings ran


class _FakeSeed(nn.Module):
    "Stands in for the seed's TorchScript file: the seed's output keys and sizes (FLAME 300 / 100)."
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B = x.shape[0]; z3 = torch.zeros(B, 3)
        return {"shape_from_facenet": x.mean((1, 2, 3))[:, None].expand(B, 300) * 0, "expr": torch.zeros(B, 100),
                "torso_pose": z3, "neck_pose": z3, "jaw_pose": z3, "eye_l_pose": z3, "eye_r_pose": z3,
                "eyelids": torch.zeros(B, 2), "cam_trans": torch.zeros(B, 3)}


def test_seed_torchscript_files_load_with_the_same_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_expressive.pt.*releases"):
        load_sheap_model("expressive", models_dir=tmp_path)
    torch.jit.script(_FakeSeed()).save(str(tmp_path / "model_paper.pt"))
    m = load_sheap_model("paper", models_dir=tmp_path)
    out = m(torch.rand(2, 3, 224, 224))
    assert set(out) == set(SEED_KEYS.values()) and out["shape"].shape == (2, 300) and out["left_eye_pose"].shape == (2, 3)
    mv = load_sheap_model(tmp_path / "model_paper.pt", head_model="synthhead")
    assert mv(torch.rand(1, 3, 224, 224))["vertices"].shape == (1, mv.head.n_verts, 3)


DDP_SCRIPT = '''
import sys
from headbook.sheap.train import train_sheap, sheap_config
from headbook.train.loop import cleanup_distributed
train_sheap(sheap_config("smoke", {"sample_every": 0}), run_dir=sys.argv[1], data_root=sys.argv[2], progress=False)
cleanup_distributed()
'''


def test_sheap_under_torchrun_two_gloo_processes_matches_one(videos, tmp_path):
    "The SHeaP trainer itself under torchrun (gloo): 2 processes x 1 pair == 1 process x 2 pairs after 3 steps."
    from headbook.train.loop import check_ddp_matches_single, read_metrics
    script = tmp_path / "ddp_sheap.py"; script.write_text(DDP_SCRIPT)
    one, two = check_ddp_matches_single(script, tmp_path, args=(videos,))
    assert [r["step"] for r in read_metrics(two)] == [1, 2, 3]


def test_landmark_only_stage_and_photo_pairs(videos):
    torch.manual_seed(0)
    cfg = sheap_config("smoke")
    step = SHeaPStep(SHeaP(cfg.model), cfg.loss, photo_pairs=1)
    batch = VideoFrames(videos, image_size=32).pair_batch(torch.tensor([1, 6]), salt=0)
    coarse = step(batch, photometric=False)
    assert coarse.losses["photo"] == 0 and coarse.losses["lmk"] > 0
    coarse.losses["loss"].backward()
    assert all(p.grad is not None for p in step.parameters() if p.requires_grad)   # DDP needs every parameter in the graph
    full = step(batch)
    assert full.render.shape[0] == 1 and full.losses["photo"] > 0          # only photo_pairs pairs are splatted


def test_shared_identity_ties_the_pair_and_consistency_loss(videos):
    "share_identity: both frames of a pair are posed with the mean of their two identities; the consistency term sees the frames' own."
    torch.manual_seed(0)
    cfg = sheap_config("smoke")
    m = SHeaP(cfg.model)
    with torch.no_grad(): m.to_shape.bias.normal_()                 # frames must disagree for the test to mean anything
    batch = VideoFrames(videos, image_size=32).pair_batch(torch.tensor([1, 6]), salt=0)
    own = SHeaPStep(m, cfg.loss)(batch, photometric=False)
    tied = SHeaPStep(m, cfg.loss, share_identity=True)(batch, photometric=False)
    with torch.no_grad():
        beta = m.encode(torch.cat([batch["src_image"], batch["tgt_image"]]))["shape"]
    torch.testing.assert_close(tied.src_params["shape"], tied.tgt_params["shape"])
    torch.testing.assert_close(tied.src_params["shape"], 0.5 * (beta[:2] + beta[2:]))
    torch.testing.assert_close(own.src_params["shape"], beta[:2])
    expected = (beta[:2] - beta[2:]).pow(2).mean()
    assert expected > 0
    torch.testing.assert_close(tied.losses["shape_consistency"], expected)
    torch.testing.assert_close(tied.losses["reg_shape"], own.losses["reg_shape"])   # the prior acts on each frame's own identity
    assert PRESETS["small"].share_identity and not PRESETS["smoke"].share_identity


def test_occluders_reach_only_the_encoder_input(videos):
    from headbook.sheap.train import occlude
    batch = VideoFrames(videos, image_size=32).pair_batch(torch.tensor([1, 6]), salt=0)
    img, lmk = batch["src_image"], batch["src_landmarks"]
    a = occlude(img, lmk, 1.0, torch.Generator().manual_seed(3))
    b = occlude(img, lmk, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and ((a - img).abs().sum((1, 2, 3)) > 0).all()         # seeded, and every image is hit
    assert torch.equal(occlude(img, lmk, 0.0, torch.Generator().manual_seed(3)), img)
    with pytest.raises(ValueError, match="landmarks"):
        occlude(img, lmk[:, :10], 0.5, torch.Generator())
    torch.manual_seed(0)
    cfg = sheap_config("smoke")
    step = SHeaPStep(SHeaP(cfg.model), cfg.loss)
    clean = step(batch, photometric=False)
    occl = step({**batch, "src_input": a, "tgt_input": batch["tgt_image"]}, photometric=False)
    assert not torch.allclose(occl.src_params["shape"], clean.src_params["shape"])   # the encoder saw the occluder
    torch.testing.assert_close(occl.tgt_params["shape"], clean.tgt_params["shape"])


def test_face_box_crops_frame_like_predict_now(tmp_path):
    "crop_face: the landmarks' box is centred with its longer side the asked fraction; the mask follows; video_spec matches predict_now."
    import json
    from headbook.sheap.train import video_spec, face_fraction
    cfg = sheap_config("smoke", {"data.crop": True, "data.focal_factor": 2.5, "data.noise": 0.01})
    spec = video_spec(cfg, n_frames=3)
    m = SHeaP(cfg.model)
    assert spec.crop_face == pytest.approx(face_fraction(m.head, m.cfg))   # what predict_now frames photos with
    assert spec.crop_face == pytest.approx(face_fraction(m.head, cfg.model))
    assert 0.4 < spec.crop_face < 0.9 and spec.n_frames == 3 and spec.image_size == 32 and spec.noise == 0.01
    write_synthetic_videos(tmp_path, 1, spec=spec, seed=2, progress=False)
    vf = VideoFrames(tmp_path)
    for i in range(3):
        f = vf.frame(i); l = f["landmarks"]; lo, hi = l.min(0).values, l.max(0).values
        torch.testing.assert_close((lo + hi) / 2, torch.tensor([16.0, 16.0]), atol=1e-3, rtol=0)
        assert abs(float((hi - lo).max()) / 32 - spec.crop_face) < 1e-3
        li = l.round().long().clamp(0, 31)
        assert f["mask"][0, li[:, 1], li[:, 0]].float().mean() > 0.9
    cam = json.loads((tmp_path / "synthhead_0000" / "camera.json").read_text())
    assert len(cam["crops"]) == 3 and cam["render_size"] == [64, 64]


def test_silhouette_loss_and_its_step_term(videos):
    from headbook.sheap.losses import silhouette_loss
    yy, xx = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    disc = (((xx - 12) ** 2 + (yy - 12) ** 2) < 49).float()[None, None]
    a = torch.linspace(0, 6.283, 300)
    fill = torch.cat([12 + r * torch.stack([a.cos(), a.sin()], -1) for r in torch.linspace(0, 6.6, 10)])[None]
    g = lambda: torch.Generator().manual_seed(0)
    good, shrunk, grown = (silhouette_loss(12 + k * (fill - 12), disc, generator=g()) for k in (1.0, 0.5, 1.5))
    assert good["sil"] * 24 < 0.6 < shrunk["sil_cover"] * 24 and shrunk["sil_inside"] == 0 and grown["sil_inside"] * 24 > 0.5
    with pytest.raises(ValueError, match=r"\[B, N, 2\]"): silhouette_loss(fill[0], disc)
    torch.manual_seed(0)
    cfg = sheap_config("smoke", {"loss.silhouette": 1.0})
    step = SHeaPStep(SHeaP(cfg.model), cfg.loss)
    out = step(VideoFrames(videos, image_size=32).pair_batch(torch.tensor([1, 6]), salt=0), photometric=False)
    assert out.losses["sil"] > 0 and out.losses["sil_reanim"] > 0
    out.losses["loss"].backward()
    assert step.model.to_shape.weight.grad.abs().sum() > 0


def test_the_model_module_does_not_import_the_trainer():
    "Dependencies point model <- train: importing sheap.model (and the package) loads nothing of headbook.train."
    import subprocess, sys
    code = ("import sys, headbook.sheap.model, headbook.sheap; "
            "bad = [m for m in sys.modules if m.startswith('headbook.train') or m == 'headbook.sheap.train']; "
            "assert not bad, bad; from headbook.sheap import load_sheap_model; "
            "assert load_sheap_model.__module__ == 'headbook.sheap.train'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("level,expected", [(1.2, 255), (-0.2, 0)])
def test_background_outside_unit_range_is_clipped_not_wrapped(tmp_path, monkeypatch, level, expected):
    "random_background's ramp can leave [0, 1]; with noise=0 the frames were cast to uint8 unclamped (1.2 -> 50)."
    import headbook.data.scene as scene
    monkeypatch.setattr(scene, "random_background", lambda g, S: torch.full((3, S, S), level))
    write_synthetic_videos(tmp_path, 1, spec=SyntheticVideoSpec(n_frames=1, image_size=32), seed=1, progress=False)
    f = VideoFrames(tmp_path).frame(0)
    bg = f["image"][:, ~f["mask"][0].bool()]           # [3, pixels outside the head]
    assert bg.numel() > 0 and torch.all((bg * 255).round() == expected)
