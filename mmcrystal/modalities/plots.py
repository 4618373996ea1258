"""Pictures of a structure's derived modalities: our XRD against pymatgen's, and the simulated micrograph.

Used by ``scripts/plot_modalities.py`` (a documented command) and its test, so a person can look at what the
pipeline feeds the model. Uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_structure_modalities"]


def plot_structure_modalities(structure, out_png: str | Path, title: str = "", xrd_config=None, micrograph_config=None):
    """Write one PNG: simulated XRD (ours, profile and sticks) over pymatgen's sticks, and the micrograph.

    Args:
        structure: pymatgen Structure.
        out_png: Output path.
        title: Figure title (e.g. the material id and formula).
        xrd_config: `XRDConfig` (default 5-90° 2θ, Cu Kα, 2048 bins, FWHM 0.15°).
        micrograph_config: `MicrographConfig` (default 128 x 128, 0.15 Å pixels).

    Returns:
        dict with the largest peak-position and intensity differences between ours and pymatgen's peak lists.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    from mmcrystal.modalities.micrograph import MicrographConfig, simulate_micrograph
    from mmcrystal.modalities.xrd import (
        XRDConfig,
        match_peaks,
        peaks_from_structure,
        two_theta_grid,
        xrd_from_structures,
    )

    xrd_config = xrd_config or XRDConfig(n_bins=2048, fwhm=0.15)
    micrograph_config = micrograph_config or MicrographConfig()
    profile = xrd_from_structures([structure], xrd_config)[0]
    grid = two_theta_grid(xrd_config).numpy()
    ours = peaks_from_structure(structure, xrd_config)
    ref = XRDCalculator(wavelength=xrd_config.wavelength).get_pattern(
        structure, two_theta_range=(xrd_config.two_theta_min, xrd_config.two_theta_max)
    )
    disagreements = match_peaks(ours, (np.asarray(ref.x), np.asarray(ref.y)))
    image, meta = simulate_micrograph(structure, micrograph_config)

    fig, (ax_xrd, ax_img) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    ax_xrd.plot(grid, 100 * profile / max(profile.max(), 1e-12), lw=0.8, color="0.3", label="mmcrystal profile")
    ax_xrd.vlines(ref.x, 0, ref.y, color="tab:orange", lw=2.5, alpha=0.6, label="pymatgen XRDCalculator")
    ax_xrd.vlines(ours[0], 0, ours[1], color="tab:blue", lw=0.9, label="mmcrystal peaks")
    ax_xrd.set(xlabel="2θ (degrees, Cu Kα)", ylabel="intensity (max = 100)", xlim=(grid[0], grid[-1]))
    ax_xrd.legend(loc="upper right", fontsize=8)
    ax_xrd.set_title(f"XRD: {len(ref.x)} pymatgen peaks, {len(disagreements)} disagreements", fontsize=9)
    extent = [0, image.shape[1] * meta.pixel_size, image.shape[0] * meta.pixel_size, 0]
    ax_img.imshow(image.numpy(), cmap="gray", extent=extent)
    ax_img.set(xlabel="Å", ylabel="Å", title=f"simulated HAADF, zone axis {list(meta.zone_axis)}")
    ax_img.title.set_fontsize(9)
    fig.suptitle(title or structure.composition.reduced_formula)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return {"pymatgen_peaks": len(ref.x), "disagreements": disagreements}
