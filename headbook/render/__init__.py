"Differentiable renderers: PyTorch3D meshes with SH light, and 2D Gaussian surfels rigged to a mesh."
from .lighting import SH_CONSTANTS, sh_basis, sh_shading, directional_sh
from .mesh import (RasterSettings, soft_settings, MeshRender, render_mesh, render_mesh_weak_perspective,
                   rasterize, pinhole_to_ndc, weak_perspective_to_ndc)
from .gaussians import GaussianRender, rasterize_2dgs, rasterize_2dgs_torch, project_surfels
from .rig import GaussianBinding, RiggedGaussians, rig_gaussians, sample_binding, triangle_size
