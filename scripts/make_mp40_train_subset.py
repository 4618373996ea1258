"""MP-40 training rows for an offline mirror that has only Chemeleon's test files.

Chemeleon's MP-40 `test.csv` is a *time* split: every test structure entered the Materials Project between
2018-08-04 and 2022-05-20 (`created_at`), and training used the structures created before. The mirror lacks
`train.csv`, but it has the test file of Chemeleon's *random* split (`random_split_test.csv`, 708 rows with the same
GPT captions). Its rows that (a) are not in the time-split test file and (b) were created before the time split's
first test structure belong to the time split's training period, so a decoder may train on them and still be
scored on the time-split test captions without leakage. This script writes those rows (all columns kept) and logs
how many rows each rule left out.

    python scripts/make_mp40_train_subset.py ../shared/data/mp_40_text runs/mp40_train_subset.csv

Then `mmcrystal prepare ... --inputs+ train=runs/mp40_train_subset.csv ...`
(configs/diffusion/text_composition_mp40_cpu.yaml has the full command). With network access use the real `train`
split instead (`mmcrystal prepare --dataset mp_40_text`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger("make_mp40_train_subset")


def train_subset(test: pd.DataFrame, random_test: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows of `random_test` inside the time split's training period (module docstring) and a count of each reason
    a row was left out. Both frames need `material_id` and `created_at` (ISO dates)."""
    for name, frame in (("test", test), ("random_split_test", random_test)):
        missing = {"material_id", "created_at"} - set(frame.columns)
        if missing:
            raise ValueError(f"{name}: no column(s) {sorted(missing)}")
    test_start = pd.to_datetime(test["created_at"], format="mixed").min()
    created = pd.to_datetime(random_test["created_at"], errors="coerce", format="mixed")
    in_test = random_test["material_id"].isin(set(test["material_id"]))
    no_date = created.isna()
    late = ~no_date & (created >= test_start)
    keep = ~in_test & ~no_date & ~late
    counts = {
        "read": len(random_test),
        "kept": int(keep.sum()),
        "in_time_split_test": int(in_test.sum()),
        "no_created_at": int((no_date & ~in_test).sum()),
        "created_in_test_window": int((late & ~in_test).sum()),
    }
    return random_test[keep].reset_index(drop=True), counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mirror", help="folder with test.csv and random_split_test.csv (../shared/data/mp_40_text)")
    parser.add_argument("out", help="CSV to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(args.mirror)
    test, random_test = pd.read_csv(folder / "test.csv"), pd.read_csv(folder / "random_split_test.csv")
    subset, counts = train_subset(test, random_test)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    subset.to_csv(args.out, index=False)
    log.info("time-split test window starts %s; %s", pd.to_datetime(test["created_at"], format="mixed").min(), counts)
    log.info("wrote %d rows to %s", len(subset), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
