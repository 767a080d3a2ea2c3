"Differentiable renderers: PyTorch3D meshes with SH light, and 2D Gaussian surfels rigged to a mesh."
from .lighting import SH_CONSTANTS, sh_basis, sh_shading, directional_sh
