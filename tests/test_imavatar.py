"IMavatar: data layout, deformation, correspondences, rendering, training, resume, DDP, bad inputs."
import math, json
from pathlib import Path
import numpy as np
import pytest
import torch

from headbook.models import load_head_model
from headbook.data.avatar import TalkingHeadSpec, write_talking_head, read_avatar_video, read_params, talking_head_params
from headbook.imavatar.model import (IMavatar, IMavatarModelConfig, TINY_MODEL, PointAttributes, frame_rig,
                                     canonical_params, deform_points, head_attributes, to_imavatar,
                                     correspondences, pretrain_deformer)
from headbook.imavatar.render import render_avatar, render_rays, RenderConfig
from headbook.imavatar.train import (imavatar_config, train_imavatar, IMavatarStep, AvatarRays, build_avatar,
                                     load_imavatar, prepare_data)


@pytest.fixture(scope="module")
def head():
    return load_head_model("synthhead")


def _frames(head, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(shape=0.5 * torch.randn(1, head.n_shape, generator=g),
                expression=0.6 * torch.randn(B, head.n_expr, generator=g),
                global_pose=0.25 * torch.randn(B, 3, generator=g), neck_pose=0.15 * torch.randn(B, 3, generator=g),
                jaw_pose=torch.rand(B, 3, generator=g) * torch.tensor([0.3, 0.03, 0.0]),
                translation=0.02 * torch.randn(B, 3, generator=g))


def _deform_all(head, attrs, x_c, frames, ghost):
    B, V = frames["expression"].shape[0], x_c.shape[0]
    rig, can = frame_rig(head, frames, ghost), frame_rig(head, canonical_params(head, frames["shape"]), ghost)
    rep = lambda a: a.repeat(B, *[1] * (a.dim() - 1))
    return deform_points(rep(x_c), PointAttributes(rep(attrs.exprdirs), rep(attrs.posedirs), rep(attrs.weights)),
                         rig, can, torch.arange(B).repeat_interleave(V)).reshape(B, V, 3)


@pytest.mark.parametrize("ghost", [True, False])
@pytest.mark.parametrize("name", ["synthhead", "ict"])
def test_head_attributes_reproduce_the_head_models_lbs(name, ghost, head):
    h = head if name == "synthhead" else load_head_model("ict")
    f = _frames(h)
    v_can = to_imavatar(h(**canonical_params(h, f["shape"])).vertices[0])
    x_d = _deform_all(h, head_attributes(h, ghost), v_can, f, ghost)
    want = to_imavatar(h(**f).vertices)
    assert (x_d - want).abs().max() < 2e-5


def test_pretrained_deformer_approximates_the_head_models_lbs(head):
    torch.manual_seed(0)
    f = _frames(head, B=2)
    av = IMavatar(head, IMavatarModelConfig(**{**TINY_MODEL, "def_width": 64, "def_hidden": 3}), shape=f["shape"])
    v_can = av.canonical_head_vertices()
    want = to_imavatar(head(**f).vertices)
    err = lambda: float((_deform_all(head, av.deformer(v_can), v_can, f, True) - want).norm(dim=-1).mean().detach())
    w_err = lambda: float((av.deformer(v_can).weights - head_attributes(head).weights).abs().mean().detach())
    before, w_before = err(), w_err()
    losses = pretrain_deformer(av, steps=150, n_points=1024, lr=3e-3)
    after = err()
    # metres: the rigid start is centimetres off; the fitted deformer a few millimetres
    assert after < 0.5 * before and after / 4 < 0.006, (before / 4, after / 4)
    assert np.mean(losses[-10:]) < 0.5 * losses[0]
    # the skinning weights move towards the head model's (mean absolute error per bone; from equal weights)
    assert w_err() < 0.6 * w_before, (w_before, w_err())


def _nonrigid_avatar(head, seed=0):
    torch.manual_seed(seed)
    av = IMavatar(head, IMavatarModelConfig(**TINY_MODEL))
    with torch.no_grad():                      # non-trivial weights and blendshapes (the untrained one is rigid)
        for p in av.deformer.skin.parameters(): p.normal_(0, 0.05)
        for p in av.deformer.blend.parameters(): p.normal_(0, 0.002)
    return av


def test_broyden_recovers_canonical_points_and_flags_failures(head):
    av = _nonrigid_avatar(head)
    f = _frames(head, B=2, seed=1); f.pop("shape")
    rig = av.rig(f)
    g = torch.Generator().manual_seed(2)
    x_c = 0.7 * torch.nn.functional.normalize(torch.randn(200, 3, generator=g), dim=-1) * torch.rand(200, 1, generator=g)
    fr = torch.arange(200) % 2
    with torch.no_grad(): x_d = av.deform(x_c, rig, fr)
    cor = correspondences(av, x_d, rig, fr)
    assert cor.valid.float().mean() > 0.95
    with torch.no_grad(): res = (av.deform(cor.x_c, rig, fr) - x_d).norm(dim=-1)
    assert (res[cor.valid] < 1e-5).all()
    # where one start converged, the recovered point is the original one (the deformation is near-rigid here)
    assert ((cor.x_c - x_c).norm(dim=-1)[cor.valid] < 1e-3).float().mean() > 0.95
    # with one iteration most starts fail: the flags must agree with the residuals
    few = correspondences(av, x_d, rig, fr, max_iter=1)
    with torch.no_grad(): r1 = (av.deform(few.x_c, rig, fr) - x_d).norm(dim=-1)
    assert (~few.valid).any() and (r1[few.valid] < 1e-5).all() and (r1[~few.valid] >= 1e-5).all()
    assert (few.sdf[~few.valid] == 1.0).all()


def test_ift_gradient_of_correspondences_matches_finite_differences(head):
    av = _nonrigid_avatar(load_head_model("synthhead")).double()     # a fresh head: .double() works in place
    f = {k: v.double() for k, v in _frames(head, B=1, seed=3).items() if k != "shape"}
    rig = av.rig(f)
    x_d = torch.tensor([[0.1, 0.2, 0.4]], dtype=torch.float64, requires_grad=True)
    c = correspondences(av, x_d, rig, grad=True, tol=1e-10, max_iter=30)
    c.x_c[0, 0].backward()
    eps = 1e-5
    fd = []
    for k in range(3):
        e = torch.zeros(1, 3, dtype=torch.float64); e[0, k] = eps
        a = correspondences(av, (x_d + e).detach(), rig, tol=1e-11, max_iter=30).x_c[0, 0]
        b = correspondences(av, (x_d - e).detach(), rig, tol=1e-11, max_iter=30).x_c[0, 0]
        fd.append(float((a - b) / (2 * eps)))
    assert np.allclose(x_d.grad[0].numpy(), fd, atol=1e-5)


@pytest.mark.parametrize("yaw", [0.0, 0.3])
def test_untrained_avatar_renders_the_analytic_sphere(head, yaw):
    from headbook.data.video import synthetic_camera
    from headbook.geometry.cameras import look_at, intrinsics
    av = IMavatar(head, IMavatarModelConfig(**TINY_MODEL))
    S, dist = 32, 1.6
    eye = torch.tensor([[dist * math.sin(yaw), 0.0, dist * math.cos(yaw)]])
    R, t = look_at(eye, torch.zeros(1, 3)); K = intrinsics(4.0 * S, (S, S))
    img = render_avatar(av, canonical_params(head), K[0], R[0], t[0], S)
    r, D, fpx = av.cfg.init_radius, dist * 4, float(K[0, 0, 0])
    rad = fpx * r / math.sqrt(D * D - r * r)
    v, u = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    disc = ((u - S / 2) ** 2 + (v - S / 2) ** 2 < rad ** 2).float()
    m = img.mask[0]
    iou = (m * disc).sum() / ((m + disc) > 0).sum()
    assert iou > 0.95, float(iou)
    assert (img.image[:, m == 0] == 1.0).all()                         # white background


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imv") / "person"
    cfg = imavatar_config("smoke", {"data.root": ""})
    d = cfg.data
    write_talking_head(root, "synthhead", TalkingHeadSpec(n_train=d.n_train, n_test=d.n_test, image_size=d.render_size))
    return root


def test_talking_head_layout_and_heldout_split(smoke_data, head):
    tr, te = read_avatar_video(smoke_data / "train"), read_avatar_video(smoke_data / "test")
    assert tr.images.shape[0] == 4 and te.images.shape[0] == 2 and tr.meshes.shape[1] == head.n_verts
    assert torch.equal(tr.params["shape"], te.params["shape"])
    # held-out frames: no test expression equals a training one
    d = torch.cdist(te.params["expression"], tr.params["expression"]).min()
    assert d > 0.05
    # the stored meshes are the head model's vertices for the stored parameters
    with torch.no_grad(): v = head(**tr.frame_params([1])).vertices[0]
    assert torch.allclose(v, tr.meshes[1], atol=1e-6)
    assert json.loads((smoke_data / "avatar.json").read_text())["head_model"] == "synthhead"


def test_one_training_step_lowers_the_loss(smoke_data):
    torch.manual_seed(0)
    cfg = imavatar_config("smoke", {"data.root": str(smoke_data), "lr": 3e-4, "n_rays": 96})
    video = read_avatar_video(smoke_data / "train", cfg.data.image_size)
    av = build_avatar(cfg, video)
    step = IMavatarStep(av, AvatarRays(video), cfg)
    opt = torch.optim.Adam(av.parameters(), lr=cfg.lr)
    fr = torch.tensor([0])
    l0 = step(fr, 0)
    opt.zero_grad(); l0["loss"].backward(); opt.step()
    l1 = step(fr, 0)
    assert float(l1["loss"]) < float(l0["loss"]), (float(l0["loss"]), float(l1["loss"]))


def test_alpha_annealing_follows_the_milestones():
    from headbook.imavatar.train import alpha_at, IMavatarLossWeights
    w = IMavatarLossWeights(alpha=50.0, alpha_factor=2.0, alpha_milestones=(2, 4))
    assert [alpha_at(w, e) for e in (0, 1.9, 2, 3.5, 4, 10)] == [50, 50, 100, 100, 200, 200]
    assert alpha_at(IMavatarLossWeights(), 999) == 50.0          # the seed's supervised config: no milestones


def test_a_killed_imavatar_run_resumes_exactly(tmp_path, smoke_data):
    from headbook.train.loop import check_resume_exact
    cfg = imavatar_config("smoke", {"data.root": str(smoke_data), "ckpt_every": 2, "epochs": 1})
    r = check_resume_exact(lambda d, stop: train_imavatar(cfg, d, progress=False, stop_after=stop), tmp_path, 2)
    assert r["full"].step == 4 and r["rest"].resumed_from == 2


def test_load_and_bad_checkpoints(tmp_path, smoke_data):
    cfg = imavatar_config("smoke", {"data.root": str(smoke_data), "epochs": 1})
    train_imavatar(cfg, tmp_path / "run", progress=False)
    tr = load_imavatar(tmp_path / "run")
    assert not tr.avatar.training and tr.data_root == smoke_data.resolve()
    with pytest.raises(FileNotFoundError, match="no IMavatar checkpoint"): load_imavatar(tmp_path / "nothing")
    bad = tmp_path / "bad.pt"; torch.save({"step": 1, "model": {"w": torch.zeros(1)}, "extra": {}}, bad)
    with pytest.raises(ValueError, match="not an IMavatar checkpoint"): load_imavatar(bad)


def _copy_split(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_reader_refuses_unusable_frames(tmp_path, smoke_data):
    d = _copy_split(smoke_data / "train", tmp_path / "a")
    z = dict(np.load(d / "params.npz"))
    np.savez(d / "params.npz", **{k: (v[:-1] if k not in ("shape", "model", "albedo", "sh") else v) for k, v in z.items()})
    with pytest.raises(ValueError, match="frame 000003 .*has no parameters"): read_avatar_video(d)
    z2 = dict(z); z2["jaw_pose"] = z["jaw_pose"][:-1]; np.savez(d / "params.npz", **z2)
    with pytest.raises(ValueError, match="disagree on the number of frames"): read_avatar_video(d)
    z3 = dict(z); z3["expression"] = z["expression"].copy(); z3["expression"][2, 0] = np.nan
    np.savez(d / "params.npz", **z3)
    with pytest.raises(ValueError, match="expression is NaN or infinite at frame 000002"): read_avatar_video(d)
    np.savez(d / "params.npz", **z)
    (d / "masks" / "000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="has no masks/000001.png"): read_avatar_video(d)
    e = _copy_split(smoke_data / "train", tmp_path / "b"); (e / "camera.json").unlink()
    with pytest.raises(FileNotFoundError, match="no camera.json"): read_avatar_video(e)
    with pytest.raises(FileNotFoundError, match="no parameter file"): read_params(tmp_path / "none.npz")


def test_bad_inputs_get_clear_errors(head, tmp_path):
    from headbook.data.video import write_synthetic_video
    with pytest.raises(ValueError, match="expression"): frame_rig(head, {"jaw_pose": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="jaw_pose"):
        frame_rig(head, {"expression": torch.zeros(1, head.n_expr), "jaw_pose": torch.zeros(1, 4)})
    with pytest.raises(ValueError, match="NaN|finite"):
        frame_rig(head, {"expression": torch.full((1, head.n_expr), float("nan"))})
    av = IMavatar(head, IMavatarModelConfig(**TINY_MODEL))
    rig2 = av.rig({"expression": torch.zeros(2, head.n_expr)})
    with pytest.raises(ValueError, match="one frame"): render_rays(av, rig2, torch.zeros(4, 3), torch.ones(4, 3) / 3 ** .5)
    with pytest.raises(ValueError, match="x_d"): correspondences(av, torch.zeros(4, 2), rig2)
    p = talking_head_params(head, TalkingHeadSpec(n_train=3))
    p["jaw_pose"] = p["jaw_pose"][:2]
    with pytest.raises(ValueError, match="jaw_pose.*2 rows; expected 3"): write_synthetic_video(tmp_path, "v", head, params=p)
    with pytest.raises(ValueError, match="split"): talking_head_params(head, TalkingHeadSpec(), split="val")
    with pytest.raises(FileNotFoundError, match="no train/"):
        prepare_data(imavatar_config("smoke", {"data.root": str(tmp_path)}), tmp_path)


DDP_SCRIPT = '''
import sys
from headbook.imavatar.train import imavatar_config, train_imavatar
from headbook.train.loop import cleanup_distributed
train_imavatar(imavatar_config("smoke", {"data.root": sys.argv[2], "batch_size": 2, "epochs": 1, "ckpt_every": 2}),
               run_dir=sys.argv[1], progress=False)
cleanup_distributed()
'''


def test_imavatar_under_torchrun_two_gloo_processes_matches_one(tmp_path, smoke_data):
    "2 processes x 1 frame == 1 process x 2 frames after 2 steps."
    from headbook.train.loop import check_ddp_matches_single, read_metrics
    script = tmp_path / "ddp_imavatar.py"; script.write_text(DDP_SCRIPT)
    one, two = check_ddp_matches_single(script, tmp_path, args=(smoke_data,), atol=1e-4)
    assert [r["step"] for r in read_metrics(two)] == [1, 2]
