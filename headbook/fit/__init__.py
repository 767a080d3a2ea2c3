"Photometric FLAME fitting (seed: photometric_optimization) and the photo-to-mesh `reconstruct` job."
from headbook.fit.photometric import FitConfig, FitResult, PRESETS, fit_photometric, shade_pixels
from headbook.fit.reconstruct import (CropTransform, PhotoResult, face_crop, landmark_nme, reconstruct,
                                      warp_to_crop, warp_to_photo)

__all__ = ["FitConfig", "FitResult", "PRESETS", "fit_photometric", "shade_pixels", "CropTransform", "PhotoResult",
           "face_crop", "landmark_nme", "reconstruct", "warp_to_crop", "warp_to_photo"]
