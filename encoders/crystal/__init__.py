"""Crystal encoders and the crystal input contract (`CrystalGraphInput`)."""

from encoders.crystal.batch import CrystalGraphInput, CrystalLike, cartesian_coords, fully_connected_edges
from encoders.crystal.chgnet_backbone import CHGNetConfig, CHGNetEncoder, crystals_to_structures
from encoders.crystal.cspnet import CSPNetConfig, CSPNetEncoder
from encoders.crystal.neighbors import (
    NeighborList,
    edge_vectors,
    images_per_axis,
    minimum_image_distances,
    periodic_radius_graph,
)
from encoders.crystal.radius_graph import RadiusGraphConfig, RadiusGraphEncoder

__all__ = [
    "CHGNetConfig",
    "CHGNetEncoder",
    "CSPNetConfig",
    "CSPNetEncoder",
    "CrystalGraphInput",
    "CrystalLike",
    "NeighborList",
    "RadiusGraphConfig",
    "RadiusGraphEncoder",
    "cartesian_coords",
    "crystals_to_structures",
    "edge_vectors",
    "fully_connected_edges",
    "images_per_axis",
    "minimum_image_distances",
    "periodic_radius_graph",
]
