"""mmcrystal: a multimodal foundation model of crystalline materials.

Heavy dependencies (torch, pymatgen, lightning) are imported by the submodules that need them, so that
``import mmcrystal`` and ``mmcrystal --help`` stay fast.
"""

__version__ = "0.1.0"
