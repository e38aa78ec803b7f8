"""Ptychography physics, array-module generic (numpy or CuPy arrays in, same module out)."""

from ptyfast.physics.forward import back_propagate, far_field, forward_intensity, exit_waves
from ptyfast.physics.objects import object_from_images, random_object
from ptyfast.physics.probe import default_probe, fresnel_probe, normalise_probe, paper_probe
from ptyfast.physics.scanpath import fermat_positions, raster_positions

__all__ = [
    "back_propagate", "far_field", "forward_intensity", "exit_waves",
    "object_from_images", "random_object",
    "default_probe", "fresnel_probe", "normalise_probe", "paper_probe",
    "fermat_positions", "raster_positions",
]
