"""Check mmcrystal's powder-XRD peaks against pymatgen's XRDCalculator on MP-20 structures.

For every structure both peak lists (2theta, intensity scaled to max 100) are compared with
``mmcrystal.modalities.xrd.match_peaks``: each peak of either list above ``--min-intensity`` needs a peak of the other
list within ``--position-tol`` degrees whose intensity differs by at most ``--intensity-tol``. A structure agrees when
all its peaks do. Prints the agreement rate, the largest deviations and every failing material_id with its reasons.

    .venv/bin/python scripts/check_xrd_agreement.py            # all 9,046 MP-20 test structures
    .venv/bin/python scripts/check_xrd_agreement.py --n 500 --out runs/xrd_agreement.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmcrystal.modalities.xrd import XRDConfig, match_peaks, peaks_from_structures

DEFAULT_DATA = Path(os.environ.get("MMCRYSTAL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _parse(frame: pd.DataFrame):
    from pymatgen.core import Structure

    structures, ids, failed = [], [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fractional coordinates rounded" notes from the CIF parser
        for material_id, cif in zip(frame["material_id"], frame["cif"], strict=True):
            try:
                structures.append(Structure.from_str(cif, fmt="cif"))
                ids.append(material_id)
            except Exception as error:  # noqa: BLE001 - report, do not stop
                failed[material_id] = [f"CIF parse error: {error}"]
    return structures, ids, failed


def _deviations(ours, theirs, min_intensity: float) -> tuple[float, float, int]:
    """Largest |d 2theta| and |d I| between each reference peak >= min_intensity and its nearest peak of ours."""
    worst_pos, worst_int, count = 0.0, 0.0, 0
    for (tt_a, in_a), (tt_b, in_b) in zip(ours, theirs, strict=True):
        for t, i in zip(tt_b[in_b >= min_intensity], in_b[in_b >= min_intensity], strict=True):
            if len(tt_a):
                j = int(np.argmin(np.abs(tt_a - t)))
                worst_pos, worst_int = max(worst_pos, abs(tt_a[j] - t)), max(worst_int, abs(in_a[j] - i))
            count += 1
    return worst_pos, worst_int, count


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA / "mp_20" / "test.csv.gz")
    parser.add_argument("--n", type=int, default=None, help="first N structures (default: all)")
    parser.add_argument("--wavelength", default="CuKa")
    parser.add_argument("--two-theta", type=float, nargs=2, default=(5.0, 90.0), metavar=("MIN", "MAX"))
    parser.add_argument("--position-tol", type=float, default=0.01, help="degrees")
    parser.add_argument("--intensity-tol", type=float, default=1.0, help="absolute, 0-100 scale")
    parser.add_argument("--min-intensity", type=float, default=0.5, help="peaks below this are not compared")
    parser.add_argument("--min-rate", type=float, default=0.99, help="exit 1 below this agreement rate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    parser.add_argument("--out", type=Path, default=None, help="write a JSON report here")
    return parser.parse_args(argv)


def _print(report: dict, min_intensity: float) -> None:
    n_total, n_agree = report["n_structures"], report["n_agree"]
    print(f"structures: {n_total}  agree: {n_agree}  rate: {100 * report['agreement_rate']:.2f} %")
    print(
        f"reference peaks >= {min_intensity} compared: {report['n_reference_peaks_compared']}; "
        f"max |d2theta| {report['max_abs_two_theta_deviation_deg']:.2e} deg, "
        f"max |dI| {report['max_abs_intensity_deviation']:.2e} (0-100 scale)"
    )
    print(
        f"time: ours {report['seconds_ours']:.1f} s (incl. tensor conversion), pymatgen {report['seconds_pymatgen']:.1f} s"
    )
    for material_id, reasons in report["failures"].items():
        print(f"FAIL {material_id}: " + "; ".join(reasons[:5]) + (" ..." if len(reasons) > 5 else ""))


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(args.threads)
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    frame = pd.read_csv(args.data, nrows=args.n)
    structures, ids, failures = _parse(frame)
    config = XRDConfig(wavelength=args.wavelength, two_theta_min=args.two_theta[0], two_theta_max=args.two_theta[1])
    start = time.perf_counter()
    ours = peaks_from_structures(structures, config, batch_size=args.batch_size)
    t_ours = time.perf_counter() - start
    calculator = XRDCalculator(wavelength=args.wavelength)
    start = time.perf_counter()
    patterns = [calculator.get_pattern(s, two_theta_range=tuple(args.two_theta)) for s in structures]
    t_pymatgen = time.perf_counter() - start
    theirs = [(np.asarray(p.x), np.asarray(p.y)) for p in patterns]
    tolerances = {"position_tol": args.position_tol, "intensity_tol": args.intensity_tol}
    for material_id, a, b in zip(ids, ours, theirs, strict=True):
        if reasons := match_peaks(a, b, min_intensity=args.min_intensity, **tolerances):
            failures[material_id] = reasons
    worst_pos, worst_int, n_peaks = _deviations(ours, theirs, args.min_intensity)
    rate = (len(frame) - len(failures)) / max(len(frame), 1)
    report = {
        "data": str(args.data),
        "n_structures": len(frame),
        "n_agree": len(frame) - len(failures),
        "agreement_rate": rate,
        "n_reference_peaks_compared": n_peaks,
        "max_abs_two_theta_deviation_deg": worst_pos,
        "max_abs_intensity_deviation": worst_int,
        "seconds_ours": t_ours,
        "seconds_pymatgen": t_pymatgen,
        "settings": {**vars(args), "data": str(args.data), "out": str(args.out), "two_theta": list(args.two_theta)},
        "failures": failures,
    }
    _print(report, args.min_intensity)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0 if rate >= args.min_rate else 1


if __name__ == "__main__":
    sys.exit(main())
