"IMavatar: an implicit morphable head avatar from a monocular video (canonical SDF, texture, learned FLAME deformation)."
