"""Run profiles: how much data and training each of `smoke`, `quick` and `full` means.

smoke: every notebook end to end in minutes (tests, CI). quick: the whole report set in about an hour
on a 2-core CPU (the default of `make reports`). full: the real study, budgets in wall-clock minutes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    printed_formulas: int      # formulas drawn from the corpus for the printed sets (all splits together)
    tex_test: int              # formulas of the test split typeset by real TeX (the shifted test set)
    handwritten: int           # handwritten expressions (CROHME ink, or pseudo-ink without CROHME)
    eda_formulas: int          # formulas compared in the EDA notebook (real vs generated)
    # Training budgets live with each model: the `profiles:` section of ocrlib/configs/<model>.yaml.

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", printed_formulas=300, tex_test=40, handwritten=60, eda_formulas=2000),
    "quick": Profile("quick", printed_formulas=12000, tex_test=500, handwritten=1500, eda_formulas=93509),
    "full": Profile("full", printed_formulas=93509, tex_test=3000, handwritten=7956, eda_formulas=93509),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
