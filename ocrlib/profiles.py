"""Run profiles: how big a report run is (`make reports PROFILE=...`, notebook parameter `profile`).

smoke: every notebook end to end in minutes (tests, CI). quick (the default of `make reports`): 9-minute
training runs (4.5 in the analyses' grids); on a 2-core CPU the data, training and demo notebooks take about an
hour and the analyses about five more. full: the real study, budgets in wall-clock minutes.

A profile fixes how much data is built and which *preset* of each model's YAML (ocrlib.config) is
trained; the preset holds that model's budget (steps, wall-clock minutes, batch size).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    printed_formulas: int      # formulas drawn from the corpus for the printed sets (all splits together)
    tex_test: int              # formulas of the test split typeset by real TeX (the shifted test set)
    tex_train: int             # formulas of the train split typeset by TeX too (training sees both renderers)
    handwritten: int           # handwritten expressions (CROHME ink, or pseudo-ink without CROHME)
    handwritten_synth: int     # training formulas written with CROHME training writers' symbols (with CROHME)
    eda_formulas: int          # formulas compared in the EDA notebook (real vs generated)
    preset: str                # the model YAML preset trained at this profile (its steps and minutes)

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "smoke": Profile("smoke", printed_formulas=300, tex_test=40, tex_train=100, handwritten=60, handwritten_synth=60,
                     eda_formulas=2000,
                     preset="smoke"),
    "quick": Profile("quick", printed_formulas=12000, tex_test=500, tex_train=12000, handwritten=1500,
                     handwritten_synth=3000, eda_formulas=93509,
                     preset="quick"),
    "full": Profile("full", printed_formulas=93509, tex_test=3000, tex_train=93509, handwritten=7956,
                    handwritten_synth=20000, eda_formulas=93509,
                    preset="full"),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]
