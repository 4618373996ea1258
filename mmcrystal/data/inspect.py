"""`mmcrystal inspect`: a readable summary of a prepared folder (counts, rejection reasons, statistics)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mmcrystal.data.datamodule import load_manifest

__all__ = ["inspect_prepared", "format_summary"]


def format_summary(manifest: dict, rejects: list[dict] | None = None, examples: int = 3) -> str:
    """Manifest (+ rejects) -> Markdown-ish text."""
    lines = [f"# prepared data ({manifest['format']} v{manifest['format_version']}, {manifest['created']})", ""]
    lines.append("| split | read | accepted | rejected | shards | reasons |")
    lines.append("|---|---|---|---|---|---|")
    for split, entry in manifest["splits"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(entry["rejected_by_reason"].items())) or "-"
        lines.append(
            f"| {split} | {entry['records_read']} | {entry['accepted']} | {entry['rejected']} | "
            f"{len(entry['shards'])} | {reasons} |"
        )
    lines += ["", f"properties: {', '.join(manifest['property_names']) or '-'}"]
    lines.append(f"modalities: {', '.join(manifest.get('modalities', {})) or 'structure only'}")
    for split, stats in manifest["stats"].items():
        atoms = {int(k): v for k, v in stats["num_atoms_histogram"].items()}
        top = Counter({int(k): v for k, v in stats["element_histogram"].items()}).most_common(5)
        a = stats["lattice"]["a"]
        lines.append(
            f"{split}: atoms/cell {min(atoms)}-{max(atoms)}, a = {a['mean']:.2f} ± {a['std']:.2f} Å, "
            f"most common Z: {', '.join(f'{z} ({n})' for z, n in top)}"
        )
    if rejects:
        lines += ["", "example rejections:"]
        lines += [f"  {r['location']}: {r['reason']} ({r['detail']})" for r in rejects[:examples]]
    return "\n".join(lines)


def inspect_prepared(root: str, examples: int = 3) -> str:
    """Summarise a folder written by ``mmcrystal prepare``.

    Args:
        root: The prepared folder (holding manifest.json, rejects.jsonl and the shards).
        examples: How many rejections to show.
    """
    manifest = load_manifest(root)
    rejects_path = Path(root) / "rejects.jsonl"
    rejects = []
    if rejects_path.exists():
        with open(rejects_path) as handle:
            for line in handle:
                rejects.append(json.loads(line))
                if len(rejects) >= examples:
                    break
    return format_summary(manifest, rejects, examples)
