"Implicit surfaces: neural SDF fields, mesh-to-SDF supervision, Broyden root finding, extraction."
