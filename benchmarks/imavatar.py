"""IMavatar speed: correspondence queries (Broyden, 3 starts) per second, seconds per rendered frame at 256² and
seconds per training step, at the `small` preset (on a CUDA machine also at the `paper` sizes).

Run: OMP_NUM_THREADS=1 python benchmarks/imavatar.py
Prints one `name: value unit` line per figure; each time is the best of a few repeats (the machine is shared).

Scene: a synthhead talking-head video (8 training frames at 64², written to a temporary folder); the avatar is
untrained apart from a short deformer pretraining, so it renders the sphere of the geometric initialisation;
rendering time grows with the area the surface covers, so a trained head's frame takes longer.
"""
import tempfile
from pathlib import Path
import torch
from headbook.data.avatar import write_talking_head, TalkingHeadSpec, read_avatar_video
from headbook.imavatar.model import correspondences, pretrain_deformer
from headbook.imavatar.train import imavatar_config, build_avatar, IMavatarStep, AvatarRays
from headbook.imavatar.render import render_avatar
from _timing import best_seconds

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench(preset: str, root: Path):
    cfg = imavatar_config(preset, {"data.image_size": 64})
    video = read_avatar_video(root / "train", 64)
    av = build_avatar(cfg, video)
    pretrain_deformer(av, steps=20, n_points=512)
    av = av.to(dev)
    rig = av.rig({k: v.to(dev) for k, v in video.frame_params([0]).items()})
    g = torch.Generator().manual_seed(0)
    x = (0.8 * torch.rand(4096, 3, generator=g) - 0.4).to(dev)
    with torch.no_grad(): t_c = best_seconds(lambda: correspondences(av, x, rig), n=3)
    print(f"imavatar_{preset}_correspondences: {len(x) / t_c:.3g} queries/s")
    K = video.K.clone(); K[:2] *= 256 / video.image_size                  # the same camera at 256²
    t_r = best_seconds(lambda: render_avatar(av, video.frame_params([0]), K, video.R, video.t, 256, cfg.render),
                       n=1, warmup=False)
    print(f"imavatar_{preset}_render_256: {t_r:.3g} s/frame")
    step = IMavatarStep(av, AvatarRays(video), cfg).to(dev)
    opt = torch.optim.Adam(av.parameters(), lr=cfg.lr)
    it = iter(range(10 ** 6))
    def one():
        s = next(it); l = step(torch.tensor([s % len(video)]), s)
        opt.zero_grad(); l["loss"].backward(); opt.step()
    t_s = best_seconds(one, n=5)
    print(f"imavatar_{preset}_train_step: {t_s:.3g} s/step ({cfg.n_rays} rays)")


if __name__ == "__main__":
    root = Path(tempfile.mkdtemp()) / "person"
    write_talking_head(root, "synthhead", TalkingHeadSpec(n_train=8, n_test=1, image_size=64))
    bench("small", root)
    if dev.type == "cuda": bench("paper", root)
