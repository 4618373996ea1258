"""Derived modalities added by ``mmcrystal prepare --modalities ...``, computed per shard in the worker processes.

==============  ==========================================================================================
``captions``    records without provided captions get ``n`` seeded template captions from their structure and
                properties (`mmcrystal.modalities.captions`); provided captions (MP-40 prompts) are kept as-is
``xrd``         powder XRD on a fixed 2θ grid from the batched torch simulator (`mmcrystal.modalities.xrd`)
``micrograph``  a simulated Z-contrast image (`mmcrystal.modalities.micrograph`), stored as float16
==============  ==========================================================================================

DOS is never derived: it has to be read from calculations (`mmcrystal.modalities.dos`), and the shared datasets
carry none, so it stays absent rather than invented. Seeds come from the record id, so a record gets the same
captions and noise whichever shard or process handles it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from mmcrystal.data.record import CrystalRecord

__all__ = ["MODALITIES", "ModalityConfig", "derive_modalities", "modality_metadata"]

MODALITIES = ("captions", "xrd", "micrograph")


def _default_xrd():
    from mmcrystal.modalities.xrd import XRDConfig

    # 1024 bins over 5-90° (0.083° steps) with 0.2° Gaussian peaks: the XRD encoder's default input
    return XRDConfig(n_bins=1024, fwhm=0.2, dtype="float32")


def _default_micrograph():
    from mmcrystal.modalities.micrograph import MicrographConfig

    return MicrographConfig(image_size=(64, 64), pixel_size=0.3)


@dataclass
class ModalityConfig:
    """Settings of the derived modalities.

    Attributes:
        captions_per_record: Template captions generated for a record that has none.
        xrd: XRD simulator settings (`mmcrystal.modalities.xrd.XRDConfig`); default 1024 bins, 5-90° 2θ, Cu Kα.
        micrograph: Micrograph simulator settings; default 64x64 pixels of 0.3 Å.
    """

    captions_per_record: int = 5
    xrd: object = field(default_factory=_default_xrd)
    micrograph: object = field(default_factory=_default_micrograph)


def _seed(record_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=4).digest(), "little")


def derive_modalities(records: list[CrystalRecord], names: list[str], config: ModalityConfig | None = None) -> None:
    """Fill the requested modalities of ``records`` in place."""
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {MODALITIES}")
    config = config or ModalityConfig()
    if not records:
        return
    if "captions" in names:
        from mmcrystal.modalities.captions import captions_from_facts, describe_structure

        for record in records:
            if not record.captions:
                symprec = record.symmetry.get("symprec", 0.1)
                facts = describe_structure(record.structure, symprec, symmetry=record.symmetry or None)
                record.captions = captions_from_facts(
                    facts, record.properties, config.captions_per_record, _seed(record.id)
                )
    if "xrd" in names:
        from mmcrystal.modalities.xrd import xrd_from_structures

        patterns = xrd_from_structures([r.structure for r in records], config.xrd)
        for record, pattern in zip(records, patterns, strict=True):
            record.xrd = pattern
    if "micrograph" in names:
        from mmcrystal.modalities.micrograph import simulate_micrographs

        images, _ = simulate_micrographs(
            [r.structure for r in records], config.micrograph, [_seed(r.id) for r in records]
        )
        for record, image in zip(records, images.numpy(), strict=True):
            record.image = image


def modality_metadata(names: list[str], config: ModalityConfig | None = None) -> dict:
    """Grids and settings of the derived modalities, for the manifest."""
    config = config or ModalityConfig()
    out: dict = {}
    if "captions" in names:
        out["captions"] = {"generated_per_record": config.captions_per_record, "provided_kept": True}
    if "xrd" in names:
        xrd = config.xrd
        out["xrd"] = {
            **asdict(xrd),
            "wavelength_angstrom": xrd.wavelength_angstrom,
            "grid": "linspace(min, max, n_bins)",
        }
    if "micrograph" in names:
        out["micrograph"] = asdict(config.micrograph)
    return out
