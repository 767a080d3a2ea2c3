"Implicit surfaces: SDF fields, mesh-to-SDF supervision, Broyden root finding, extraction (tracing: render.implicit)."
# Hand-written re-exports (nbdev does not overwrite an existing __init__.py).
from headbook.implicit.fields import (positional_encoding, encoding_dim, SDFNetwork, sdf_and_gradient, eikonal_loss,
                                      MLPEnsemble, blend_ensemble)
from headbook.implicit.sampling import (winding_number, winding_number_exact, SignedDistance, signed_distance,
                                        SDFSamples, MeshSDFSampler, head_model_meshes, sdf_stream,
                                        sdf_supervision_loss)
from headbook.implicit.roots import BroydenResult, RootResult, batch_jacobian, broyden, find_roots
from headbook.implicit.extract import (grid_points, eval_chunked, sdf_grid, GridEval, sdf_grid_coarse_to_fine,
                                       marching_cubes, largest_component, ExtractedMesh, extract_mesh)
