"""The checks that need a GPU, in one command: the CUDA twin tests and the GPU timings.

Run on a machine with CUDA (a `pip install gsplat` first, for the gsplat twin):
    python benchmarks/gpu_checks.py
It runs the tests that skip without CUDA — PyTorch3D's CUDA rasteriser against the CPU paths
(tests/test_render_mesh.py::test_cuda_matches_cpu) and gsplat's 2DGS rasteriser against the book's torch
reference, forward and backward (tests/test_render_gaussians.py::test_gsplat_twin_forward_and_backward) —
refusing to count a skip as a pass, then `benchmarks/render.py` (its GPU lines appear with CUDA).
Prints one `name: value unit` line per figure; exits non-zero if a twin test fails or skipped.
Without CUDA it says so and exits 2.
"""
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
TWINS = ["tests/test_render_mesh.py::test_cuda_matches_cpu",
         "tests/test_render_gaussians.py::test_gsplat_twin_forward_and_backward"]


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_checks: no CUDA device here; run this on a GPU machine (the twin tests skip without one)")
        return 2
    print(f"cuda_device: {torch.cuda.get_device_name(0)}")
    bad = 0
    for t in TWINS:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", t], cwd=ROOT, capture_output=True, text=True)
        out = r.stdout + r.stderr
        passed = r.returncode == 0 and " passed" in out and "skipped" not in out
        print(f"{t.split('::')[1]}: {int(passed)} passed")
        if not passed:
            bad += 1
            print(out[-3000:])
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render.py")], cwd=ROOT)
    return 1 if bad or r.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
