"""Pretrained CHGNet (Deng et al. 2023) as a crystal feature extractor.

`chgnet` and `pymatgen` are imported only when the encoder is built or run, so importing this module stays
cheap and keeps `encoders` free of pymatgen at import time.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import torch

from encoders.base import Encoder, EncoderOutput, register_encoder
from encoders.crystal.batch import CrystalLike, check_crystal_input
from encoders.layers.pooling import masked_mean
from encoders.layers.scatter import to_padded


@dataclass
class CHGNetConfig:
    """Config of `CHGNetEncoder`.

    Attributes:
        model_name: Checkpoint shipped inside the chgnet wheel (no network): "0.3.0" (MPtrj, default), "0.2.0"
            or "r2scan".
        freeze: Keep the pretrained weights fixed: no gradients, and the backbone stays in eval mode even when
            the surrounding model trains.
    """

    model_name: str = "0.3.0"
    freeze: bool = True


def crystals_to_structures(crystals: CrystalLike) -> list[Any]:
    """Convert a crystal batch to pymatgen `Structure`s (lattice rows in Å, fractional coordinates)."""
    from pymatgen.core import Lattice, Structure

    lattice = crystals.lattice.detach().cpu().double().numpy()  # (B, 3, 3) Å
    frac = crystals.frac_coords.detach().cpu().double().numpy()  # (N, 3)
    numbers = crystals.atomic_numbers.detach().cpu().tolist()
    counts = crystals.num_atoms.detach().cpu().tolist()
    structures, start = [], 0
    for b, n in enumerate(counts):
        species = numbers[start : start + n]
        structures.append(Structure(Lattice(lattice[b]), species, frac[start : start + n]))
        start += n
    return structures


@register_encoder(CHGNetConfig)
class CHGNetEncoder(Encoder):
    """CHGNet's learned atom and crystal features as tokens and pooled vector.

    Tokens are the atom features after CHGNet's last interaction block and its readout LayerNorm (width 64).
    `pooled` is their mean over atoms. (For the shipped checkpoints, which read out energies per atom first,
    CHGNet's own `crystal_fea` is the SUM of these features, which grows with cell size; the mean is
    `crystal_fea / num_atoms`. Checkpoints with an "ave" or "attn" readout return `crystal_fea` as is.)

    The graph is built by CHGNet's converter from pymatgen structures (atom cutoff 6 Å, bond cutoff 3 Å), so:
      - outputs carry no gradient to `frac_coords` or `lattice` (the conversion goes through numpy);
      - a structure with an atom that has no neighbour within 6 Å raises CHGNet's ValueError;
      - graph building runs on the CPU, one structure at a time (a few ms each).
    The features are invariant to rotation, translation, permutation and supercell choice, as CHGNet is.
    """

    modality = "crystal"

    def __init__(self, config: CHGNetConfig) -> None:
        super().__init__(config)
        try:
            from chgnet.model import CHGNet
        except ImportError as err:  # pragma: no cover - chgnet is a core dependency
            raise ImportError("CHGNetEncoder needs the `chgnet` package: pip install chgnet") from err
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its parameter count on load
            self.model = CHGNet.load(model_name=config.model_name, use_device="cpu", verbose=False)
        if config.freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    @property
    def output_dim(self) -> int:
        return int(self.model.atom_fea_dim)

    def train(self, mode: bool = True) -> CHGNetEncoder:
        super().train(mode)
        if self.config.freeze:
            self.model.eval()
        return self

    def _run_chgnet(self, graphs: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run CHGNet; returns final atom features (N, 64) and crystal features (B, 64)."""
        captured: list[torch.Tensor] = []
        hook = self.model.atom_conv_layers[-1].register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            prediction = self.model(graphs, task="e", return_crystal_feas=True)
        finally:
            hook.remove()
        atom_feas = captured[-1]
        if self.model.readout_norm is not None:
            atom_feas = self.model.readout_norm(atom_feas)
        return atom_feas, prediction["crystal_fea"]

    def forward(self, crystals: CrystalLike) -> EncoderOutput:
        check_crystal_input(crystals)
        device = self.model.atom_embedding.embedding.weight.device
        converter = self.model.graph_converter
        graphs = [converter(s).to(device) for s in crystals_to_structures(crystals)]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze):
            atom_feas, crystal_feas = self._run_chgnet(graphs)  # (N, 64), (B, 64)
        dtype = torch.get_default_dtype()
        batch = crystals.batch.to(device)
        tokens, mask = to_padded(atom_feas.to(dtype), batch, crystals.num_atoms.to(device))  # (B, S, 64)
        if self.model.read_out_type == "sum":
            pooled = masked_mean(tokens, mask)  # (B, 64) == crystal_fea / num_atoms
        else:
            pooled = crystal_feas.to(dtype)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
