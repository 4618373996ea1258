"""Generate crystals with a trained conditional decoder: `CrystalGenerator` and the `mmcrystal sample` command.

    from mmcrystal.generate import CrystalGenerator
    generator = CrystalGenerator.from_pretrained("runs/diffuse/pretrained")
    structures = generator.sample(prompt="a cubic perovskite oxide", n=16, steps=50, guidance=2.0)

The code lives in the `mmcrystal.generation` package (model, conditions, generator, writer, distributed, command);
this module keeps the import path that the CLI (`mmcrystal.generate:sample`), scripts and the `config.json` of
earlier pretrained folders (`mmcrystal.generate.DiffusionModelConfig`) use.
"""

from mmcrystal.generation import *  # noqa: F403 - the same names, under the old import path
from mmcrystal.generation import __all__  # noqa: F401
