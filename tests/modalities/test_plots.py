"""The modality picture: a PNG per record, XRD agreeing with pymatgen's peaks."""

from __future__ import annotations

from mmcrystal.modalities.plots import plot_structure_modalities


def test_png_written_and_peaks_agree(tmp_path, mp20_structures):
    for i, structure in enumerate(mp20_structures[:2]):
        out = tmp_path / f"record{i}.png"
        result = plot_structure_modalities(structure, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
        assert result["pymatgen_peaks"] > 0 and result["disagreements"] == []
