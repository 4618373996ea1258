"""Closed-loop inverse design: propose crystals with the conditional decoder, screen them in stages, score them
with a surrogate ensemble, judge a shortlist with an oracle (CHGNet E_hull + a held-out property model), update
(CMA-ES over the condition, active learning of the surrogate), and watch for known failure modes.

Entry points: `mmcrystal design --config configs/design/<goal>.yaml` and `mmcrystal.design.run.run_design`.
"""
