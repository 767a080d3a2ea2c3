"NPHM: neural parametric head models -- a local SDF ensemble for identity, a forward deformation for expression."
# Hand-written re-exports (nbdev does not overwrite an existing __init__.py).
from headbook.nphm.model import (NPHM_SCALE, to_nphm, from_nphm, AnchorLayout, head_anchors, NPHMModelConfig,
                                 NPHMIdentity, NPMIdentity, ForwardDeformation, NPHM)
from headbook.nphm.train import (NPHMDataConfig, NPHMLossWeights, NPHMExprLossWeights, NPHMConfig, PRESETS,
                                 nphm_config, NPHMData, identity_losses, expression_losses, NPHMStep, train_nphm,
                                 TrainedNPHM, load_nphm)
from headbook.nphm.fit import (NPHMFitConfig, FIT_PRESETS, fit_config, NPHMFit, fit_pointcloud, head_box, nphm_mesh,
                               fit_metrics, heldout_depth_fits, summarise_fits, fits_table, fit_files)
