"""What a text-conditioned decoder reads from a prompt: the clean-type distribution p(x_0 | x_t) it predicts for a
cell whose atom types are all masked, averaged over atoms, per prompt (and without a prompt). Elements the prompt
names should rise above the unconditional row; this separates "the text is ignored" from "the right elements come
out in the wrong ratios".

    python scripts/text_type_readout.py --model runs/mp20_text_cpu_pretrained --atoms 8 --t 0.95 \
        "Cubic NaCl in space group Fm-3m." "Orthorhombic LiFePO4 in space group Pnma." "Tetragonal BaTiO3 crystal"

Coordinates and lattice are the prior's draw (seeded); no guidance (the conditional network alone).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--model", required=True)
    parser.add_argument("--atoms", type=int, default=8, help="atoms in the masked cell")
    parser.add_argument("--crystals", type=int, default=4, help="prior draws averaged over")
    parser.add_argument("--t", type=float, default=0.95, help="diffusion time of the query, in (0, 1]")
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from pymatgen.core import Element

    from mmcrystal.generate import CrystalGenerator

    generator = CrystalGenerator.from_pretrained(args.model)
    model = generator.model
    num_atoms = torch.full((args.crystals,), args.atoms, dtype=torch.long)
    noisy = model.diffusion.prior(num_atoms, torch.Generator().manual_seed(args.seed))
    t = torch.full((args.crystals,), args.t)
    for prompt in [*args.prompts, None]:
        cond = None
        if prompt is not None:
            one = generator.encode(prompt=prompt)
            cond = type(one)(one.tokens.expand(args.crystals, -1, -1), one.mask.expand(args.crystals, -1),
                             one.groups, one.names)  # fmt: skip
        with torch.no_grad():
            probs = torch.softmax(model.denoiser(noisy, t, cond).types.float(), dim=-1).mean(0)  # (num_classes,)
        top = probs.topk(args.top)
        shown = ", ".join(f"{Element.from_Z(int(i) + 1).symbol} {float(v):.2f}" for v, i in zip(*top, strict=True))
        print(f"{prompt or '(no prompt)'}: {shown}")


if __name__ == "__main__":
    main()
