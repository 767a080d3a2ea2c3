"SHeaP: single image -> FLAME parameters, trained self-supervised through 2D Gaussians (Schoneveld et al., ICCV 2025)."
from headbook.sheap.model import SHeaP, SHeaPModelConfig, SeedSHeaP, sheap_camera, PARAM_KEYS
from headbook.sheap.train import load_sheap_model   # reads training checkpoints, so it lives with the trainer

__all__ = ["SHeaP", "SHeaPModelConfig", "SeedSHeaP", "load_sheap_model", "sheap_camera", "PARAM_KEYS"]
