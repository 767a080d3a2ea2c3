"SHeaP: single image -> FLAME parameters, trained self-supervised through 2D Gaussians (Schoneveld et al., ICCV 2025)."
from headbook.sheap.model import SHeaP, SHeaPModelConfig, SeedSHeaP, sheap_camera, PARAM_KEYS

__all__ = ["SHeaP", "SHeaPModelConfig", "SeedSHeaP", "load_sheap_model", "sheap_camera", "PARAM_KEYS"]


# load_sheap_model reads training checkpoints, so it lives in sheap.train: imported on first use,
# so that importing the model does not import the trainer
def __getattr__(name):
    if name == "load_sheap_model":
        from headbook.sheap.train import load_sheap_model
        return load_sheap_model
    raise AttributeError(f"module 'headbook.sheap' has no attribute {name!r}")
