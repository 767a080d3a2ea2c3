"""SHeaP on the synthetic NoW validation set: the run's median/mean/std against the mean head's (trains nothing).

python benchmarks/sheap_now.py                          # the mean-head baseline only
python benchmarks/sheap_now.py --run RUN_DIR            # a train_sheap run folder (latest checkpoint) or a checkpoint .pt
python benchmarks/sheap_now.py --run RUN_DIR --subjects 24 --seed 12   # a larger, differently seeded set

With --run it also prints the face-region identity error of the run and of the mean head on 48 synthetic videos
(2 frames each) of identities not seen in training (`heldout_identity_error`), framed as the run's training frames
(face-box crops when the run trained on them), with the default pose and expression ranges.

The set is the one chapter `sheap.train` reports on: `data.now.write_synthetic_now(root, n_subjects=8,
images_per_challenge=2, models=("synthhead",), validation_subjects=8, seed=11)`, reduced to the first image of
each subject × challenge (32 photos of 8 subjects). Its identities are drawn from their own seed, disjoint from
the training videos'. The set is written once into --now-root (default: a fresh temporary folder) and reused
when that folder already holds it with the same settings; the mean head's evaluation is cached beside it.
"""
import argparse, json, pickle, shutil, sys, tempfile, time
from pathlib import Path


def prepare_now(root: Path, n_subjects: int, seed: int) -> Path:
    "Write (once) the synthetic NoW set and reduce its validation list to the first image per subject × challenge."
    from headbook.data.now import write_synthetic_now
    key = {"n_subjects": n_subjects, "images_per_challenge": 2, "models": ["synthhead"], "validation_subjects": n_subjects,
           "seed": seed, "reduced": "first image per subject x challenge"}
    stamp = root / "sheap_now_settings.json"
    if stamp.exists() and json.loads(stamp.read_text()) == key: return root
    if root.exists(): shutil.rmtree(root)
    write_synthetic_now(root, n_subjects=n_subjects, images_per_challenge=2, models=("synthhead",),
                        validation_subjects=n_subjects, seed=seed)
    lst = root / "imagepathsvalidation.txt"
    seen, keep = set(), []
    for line in lst.read_text().splitlines():
        subj, chal = line.split("/")[:2]
        if (subj, chal) not in seen: seen.add((subj, chal)); keep.append(line)
    lst.write_text("".join(l + "\n" for l in keep))
    stamp.write_text(json.dumps(key))
    return root


def run_config(run: str):
    "The SHeaPConfig a run folder or checkpoint was trained with (None when it records none)."
    import torch
    from headbook.sheap.train import SHeaPConfig
    from headbook.train.config import config_from_dict
    p = Path(run)
    if p.is_dir() and (p / "config.json").exists(): d = json.loads((p / "config.json").read_text())
    elif p.is_file(): d = torch.load(p, map_location="cpu", weights_only=False).get("extra", {}).get("config")
    else: d = None
    return config_from_dict(SHeaPConfig, d) if d else None


def heldout_identity_error(model, n_videos: int = 48, seed: int = 999, cfg=None) -> tuple[float, float, float]:
    """Face-region identity error (mm) of the run and of the mean head on synthetic videos of unseen identities.

    `n_videos` videos × 2 frames (`data.video.write_synthetic_videos(..., seed=999)`, the training videos use other
    seeds); each frame's predicted neutral head against the video's true neutral head (ground truth read here only),
    over the vertices within 9 cm of the mean head's nose tip, after a similarity alignment. Also the landmark error
    in pixels at the network's input size. With the run's config `cfg` the frames are framed (crop, render, noise) as
    its training frames; yaw and expression keep the defaults (0.5 rad, 0.6)."""
    import numpy as np, torch
    from headbook.data.video import write_synthetic_videos, SyntheticVideoSpec, VideoFrames
    from headbook.sheap.train import video_spec
    S = model.cfg.image_size
    root = Path(tempfile.mkdtemp(prefix="sheap_heldout_"))
    spec = (video_spec(cfg, n_frames=2, image_size=S, yaw=0.5, expr_amp=0.6) if cfg is not None and cfg.data.crop
            else SyntheticVideoSpec(n_frames=2, image_size=S))
    write_synthetic_videos(root, n_videos, spec=spec, seed=seed, progress=False)
    fr = VideoFrames(root, image_size=S); head = model.head
    o0 = head(shape=torch.zeros(1, head.n_shape)); v0 = o0.vertices[0]
    face = (v0 - o0.landmarks[0, 30]).norm(dim=-1) < 0.09
    from headbook.eval.now import procrustes
    def err(a, b):  # mean vertex distance (mm) over the face after the best similarity (no reflection)
        a, b = a[face].double().numpy(), b[face].double().numpy()
        return float(np.linalg.norm(procrustes(a, b, reflection=False)(a) - b, axis=-1).mean() * 1000)
    imgs = torch.stack([fr.frame(i)["image"] for i in range(len(fr))]); lmk = torch.stack([fr.frame(i)["landmarks"] for i in range(len(fr))])
    p = model(imgs)
    lpx = float((model.project(p["landmarks"], S) - lmk).norm(dim=-1).mean())
    e_run, e_mean = [], []
    for i in range(len(fr)):
        vt = head(shape=torch.tensor(fr.params(i)["shape"]).float()[None]).vertices[0]
        e_run.append(err(head(shape=p["shape"][i:i + 1]).vertices[0], vt)); e_mean.append(err(v0, vt))
    shutil.rmtree(root, ignore_errors=True)
    return float(np.mean(e_run)), float(np.mean(e_mean)), lpx


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="train_sheap run folder (its latest checkpoint) or a checkpoint .pt")
    ap.add_argument("--now-root", default=None, help="where the synthetic NoW set is written / reused (default: a temporary folder)")
    ap.add_argument("--subjects", type=int, default=8, help="validation subjects (default 8, the chapter's set)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the synthetic NoW set (default 11, the chapter's set)")
    ap.add_argument("--curve", default=None, help="write the cumulative-error plot of mean head and run to this PNG")
    a = ap.parse_args(argv)
    import numpy as np, torch
    from headbook.data.now import mean_head_predictions
    from headbook.data.now import evaluate_now
    from headbook.eval.now import plot_now_curves
    tmp = Path(tempfile.mkdtemp(prefix="sheap_now_"))
    root = prepare_now(Path(a.now_root) if a.now_root else tmp / "now", a.subjects, a.seed)
    n = mean_head_predictions(root, tmp / "pred_mean")
    cache = root / "mean_head_result.pkl"                  # the mean head's result is a function of the set: kept beside it
    if cache.exists(): mean = pickle.loads(cache.read_bytes())
    else:
        mean = evaluate_now(root, tmp / "pred_mean", method_name="mean_head", out_dir=False, progress=False)
        cache.write_bytes(pickle.dumps(mean))
    print(f"now_images: {n} photos")
    print(f"now_subjects: {a.subjects} subjects")
    for k in ("median", "mean", "std"): print(f"mean_head_{k}: {getattr(mean.overall, k):.3f} mm")
    results = [mean]
    if a.run:
        from headbook.sheap import load_sheap_model
        from headbook.sheap.train import predict_now
        torch.set_grad_enabled(False)
        model = load_sheap_model(a.run)
        t0 = time.perf_counter()
        predict_now(model, root, tmp / "pred_run", progress=False)
        dt = time.perf_counter() - t0
        res = evaluate_now(root, tmp / "pred_run", method_name="sheap", out_dir=False, progress=False)
        for k in ("median", "mean", "std"): print(f"sheap_{k}: {getattr(res.overall, k):.3f} mm")
        for c, s in res.per_challenge.items(): print(f"sheap_median_{c}: {s.median:.3f} mm")
        print(f"sheap_over_mean_head_median: {res.overall.median / mean.overall.median:.3f} ratio")
        print(f"sheap_predict_time: {dt:.1f} s")
        e_run, e_mean, lpx = heldout_identity_error(model, cfg=run_config(a.run))
        print(f"heldout_identity_error_sheap: {e_run:.3f} mm")
        print(f"heldout_identity_error_mean_head: {e_mean:.3f} mm")
        print(f"heldout_landmark_error_sheap: {lpx:.2f} px")
        results.append(res)
    if a.curve:
        import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5, 4)); plot_now_curves(results, ax=ax)
        ax.set_title(f"synthetic NoW validation ({n} photos, {a.subjects} subjects, seed {a.seed})", fontsize=9)
        fig.tight_layout(); fig.savefig(a.curve, dpi=100); plt.close(fig)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
