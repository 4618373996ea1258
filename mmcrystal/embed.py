"""`mmcrystal embed` and `mmcrystal search`: put data into the shared latent space and rank it against a query.

A query can be a caption, a CIF file or a measured powder pattern (.xy/.xye/.txt, `start step end` files, CIF
powder loops); measured patterns are resampled onto the 2θ grid the model was trained on (from the prepared data's
manifest), background-subtracted and max-normalised, like the simulated training patterns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

__all__ = ["embed", "search", "embed_prepared"]

log = logging.getLogger(__name__)


def _load(model_dir: str):
    from mmcrystal.tasks.alignment import AlignmentPretraining

    return AlignmentPretraining.load_model(model_dir)


@torch.no_grad()
def embed_prepared(model, root: str, split: str, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Embeddings of every sample of a prepared split: ids, and per modality (N, latent) plus a presence mask."""
    from mmcrystal.data.datamodule import CrystalDataModule

    dm = CrystalDataModule(root=root, batch_size=batch_size, test_split=split)
    dm.setup()
    parts: dict[str, list] = {"ids": []}
    for batch in dm.test_dataloader():
        keep = ~batch.is_padding
        parts["ids"] += [i for i, k in zip(batch.ids, keep.tolist(), strict=True) if k]
        for modality, value in model(batch).items():
            parts.setdefault(f"{modality}", []).append(value.embedding[keep].float().numpy())
            parts.setdefault(f"{modality}_present", []).append(value.present[keep].numpy())
    return {k: (np.array(v) if k == "ids" else np.concatenate(v)) for k, v in parts.items()}


def embed(model: str, data: str, out: str, split: str = "test", batch_size: int = 256) -> str:
    """Embed a prepared split with an aligned model and save ``ids`` + per-modality embeddings to an .npz.

    Args:
        model: A folder written by ``save_pretrained`` (e.g. ``<run>/pretrained``).
        data: A folder written by ``mmcrystal prepare``.
        out: Output ``.npz`` path.
        split: Which split to embed.
        batch_size: Crystals per forward pass.
    """
    arrays = embed_prepared(_load(model), data, split, batch_size)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    log.info("embed: %d samples of %s/%s -> %s", len(arrays["ids"]), data, split, out)
    return out


def _query_embedding(
    model, text: str | None, cif: str | None, xrd: str | None, manifest: dict
) -> tuple[str, torch.Tensor]:
    given = [(k, v) for k, v in (("text", text), ("cif", cif), ("xrd", xrd)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one query: --text, --cif or --xrd")
    kind, value = given[0]
    if kind == "text":
        return "text", model.encode("text", [value])
    if kind == "cif":
        from pymatgen.core import Structure

        from mmcrystal.data.batch import collate_samples

        s = Structure.from_file(value)
        sample = {"meta": {"id": Path(value).stem, "properties": {}, "captions": []}, "z": np.array(s.atomic_numbers),
                  "frac": s.frac_coords, "lattice": s.lattice.matrix}  # fmt: skip
        return "crystal", model.encode("crystal", collate_samples([sample]).crystal)
    from mmcrystal.modalities.xrd import XRDConfig
    from mmcrystal.modalities.xrd_io import normalize_intensity, read_pattern, remove_background, resample

    grid = {k: v for k, v in manifest["modalities"]["xrd"].items() if k in XRDConfig.__dataclass_fields__}
    pattern = remove_background(read_pattern(value))
    values, _ = resample(pattern, XRDConfig(**grid))
    return "xrd", model.encode("xrd", torch.tensor(normalize_intensity(values), dtype=torch.float32)[None])


def search(
    model: str,
    data: str,
    split: str = "test",
    text: str | None = None,
    cif: str | None = None,
    xrd: str | None = None,
    gallery: str = "crystal",
    top_k: int = 10,
    cache: str | None = None,
) -> list[dict]:
    """Rank a prepared split against one query (a caption, a CIF file or a measured XRD pattern).

    Args:
        model: Folder written by ``save_pretrained``.
        data: Prepared folder to search.
        split: Split of ``data`` to search.
        text: Query caption.
        cif: Query structure file (CIF or anything pymatgen reads).
        xrd: Query measured powder pattern file.
        gallery: Modality of the gallery to rank (default: the crystal structures).
        top_k: How many results to return.
        cache: Optional .npz of gallery embeddings (from ``mmcrystal embed``); computed when absent.

    Returns:
        ``[{"rank", "id", "score"}, ...]`` best first (the CLI prints them as JSON).
    """
    from mmcrystal.data.datamodule import load_manifest

    net = _load(model)
    manifest = load_manifest(data)
    if cache and Path(cache).exists():
        arrays = dict(np.load(cache))
    else:
        arrays = embed_prepared(net, data, split)
        if cache:
            np.savez(cache, **arrays)
    with torch.no_grad():
        _, query = _query_embedding(net, text, cif, xrd, manifest)
    present = arrays[f"{gallery}_present"]
    scores = arrays[gallery][present] @ query[0].numpy()
    ids = arrays["ids"][present]
    order = np.argsort(-scores)[:top_k]
    results = [{"rank": r + 1, "id": str(ids[i]), "score": round(float(scores[i]), 4)} for r, i in enumerate(order)]
    return results
