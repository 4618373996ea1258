"""Evaluation of generated crystals and of learned representations: plain functions over pymatgen structures and
tensors, never a LightningModule.

Generated crystals (`mmcrystal.evaluation.run.evaluate`, `evaluate_csp`) are scored in stages, each on the survivors
of the previous one: validity, matching (uniqueness / novelty), stability (CHGNet + convex hull, S.U.N.), condition
adherence, distribution and diversity, cost. Every number is written with its protocol record
(`mmcrystal.evaluation.protocol.ProtocolRecord`). Submodules are imported on demand (nothing heavy here).
"""
