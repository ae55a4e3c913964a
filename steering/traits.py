"""The Big Five traits and their poles, spelled the way every file and command of the project spells them."""

from __future__ import annotations

from typing import Literal, get_args

Trait = Literal["Openness", "Conscientiousness", "Extraversion", "Agreeableness", "Neuroticism"]
Pole = Literal["high", "low"]

TRAITS: tuple[str, ...] = get_args(Trait)
POLES: tuple[str, ...] = get_args(Pole)


def check_trait(name: str) -> str:
    """Return the canonical trait name; accept any letter case, refuse anything else with the list of names."""
    for trait in TRAITS:
        if name.strip().lower() == trait.lower():
            return trait
    raise ValueError(f"unknown trait {name!r}: choose one of {', '.join(TRAITS)}")


def check_pole(name: str) -> str:
    pole = name.strip().lower()
    if pole not in POLES:
        raise ValueError(f"unknown pole {name!r}: choose 'high' or 'low'")
    return pole


def opposite(pole: str) -> str:
    return "low" if check_pole(pole) == "high" else "high"
