"""SHeaP inference throughput on CPU: images per second at batch 1 and 32 (224x224 inputs, parameters + vertices).

python benchmarks/sheap_inference.py            # small and paper-sized encoders
python benchmarks/sheap_inference.py small      # one preset
"""
import sys, time
import torch
from headbook.sheap.model import SHeaP
from headbook.sheap.train import PRESETS


def images_per_second(model, batch: int, min_time: float = 3.0, warmup: int = 2) -> float:
    x = torch.rand(batch, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(warmup): model(x)
        n, t0 = 0, time.perf_counter()
        while True:
            model(x); n += batch
            dt = time.perf_counter() - t0
            if dt >= min_time and n >= 2 * batch: return n / dt


def main(presets):
    torch.manual_seed(0)
    print(f"threads: {torch.get_num_threads()}")
    for name in presets:
        model = SHeaP(PRESETS[name].model).eval()
        for b in (1, 32):
            print(f"sheap_{name}_batch{b}: {images_per_second(model, b):.1f} images/s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["small", "paper"])
