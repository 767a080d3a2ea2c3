"""TEMPEH inference speed: seconds per head for the coarse stage, the refinement and both, and the peak memory, at
the `small` and `paper` model sizes (random weights: the time does not depend on them).

Run: OMP_NUM_THREADS=1 python benchmarks/tempeh.py [small paper]   (each preset in its own process, so that the peak
     memory is its own; on a CUDA machine the same runs on the GPU and the peak is the GPU's)
Prints one `name: value unit` line per figure; each time is the best of a few repeats (the machine is shared).

Scene: one synthetic frame of the preset's rig (`small`: 8 views of 96 x 128; `paper`: 16 views of 300 x 400, the
seed's FaMoS images at 1/4) of a synthhead identity (5,632 vertices), as `tempeh.train`'s data renders it.
"""
import resource, subprocess, sys, time
import torch
from _timing import best_seconds


def one(preset: str) -> None:
    from headbook.data.rig import synthetic_frames
    from headbook.tempeh.model import build_tempeh
    from headbook.tempeh.train import tempeh_config
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = tempeh_config(preset)
    d = cfg.data
    fr = synthetic_frames(("synthhead",), "test", 1, 1, d.n_views, d.image_size, d.grey, n_scan=1000)[0]
    torch.manual_seed(0)
    m = build_tempeh(cfg.model).to(dev).eval()
    img = fr.images[None].to(dev)
    n = 3 if preset == "small" else 1
    with torch.no_grad():
        co = m(img, [fr.rig], refine=False).coarse
        t_c = best_seconds(lambda: m(img, [fr.rig], refine=False), n=n, budget_s=60, warmup=False)
        t_r = best_seconds(lambda: m.refine(img, [fr.rig], co.vertices, m.faces, m.template), n=n, budget_s=120,
                           warmup=preset == "small")
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    where = "gpu" if dev.type == "cuda" else "cpu"
    print(f"tempeh_{preset}_{where}_coarse: {t_c:.3f} s/head")
    print(f"tempeh_{preset}_{where}_refine: {t_r:.3f} s/head")
    print(f"tempeh_{preset}_{where}_total: {t_c + t_r:.3f} s/head")
    print(f"tempeh_{preset}_{where}_peak_memory: {peak:.0f} MiB")
    print(f"tempeh_{preset}_views: {d.n_views} views of {d.image_size[1]}x{d.image_size[0]}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one": one(sys.argv[2]); sys.exit(0)
    for preset in sys.argv[1:] or ["small", "paper"]:
        r = subprocess.run([sys.executable, __file__, "--one", preset], capture_output=True, text=True)
        print(r.stdout, end="")
        if r.returncode: print(f"tempeh_{preset}: failed: {r.stderr.strip().splitlines()[-1]}")
