"""The phone inventory of the synthetic speech: articulatory targets of vowels and consonants.

Symbols follow X-SAMPA; all are one character, so a word is a string. Each phone is one or
more `Target`s (a stop is a closure, then a burst) that `speech.speak` blends and turns into
sound and mouth motion. `VOCABULARY` is the words the speakers say; `PAUSE` is the target
held between words.
"""

from __future__ import annotations

import dataclasses

NOISE_BANDS = {  # name: (centre Hz, standard deviation Hz) of a Gaussian spectral band
    "labial": (900.0, 700.0),
    "alveolar": (4200.0, 1500.0),
    "velar": (2100.0, 600.0),
    "s": (5800.0, 1300.0),
    "sh": (3200.0, 900.0),
    "f": (4500.0, 3000.0),
}
BAND_NAMES = tuple(NOISE_BANDS)
_NEUTRAL_FORMANTS = (500.0, 1500.0, 2500.0)


@dataclasses.dataclass(frozen=True)
class Target:
  """One steady articulatory target held for a while (a phone, or one phase of it).

  Targets are blended with the dominance model of coarticulation: each channel is
  the Gaussian-smoothed weighted mean of the targets, so a low weight lets a
  segment inherit the value of its neighbours (e.g. the lip shape of a /t/).
  """

  ms: tuple[float, float]  # duration range in ms
  formants: tuple[float, float, float] = _NEUTRAL_FORMANTS  # F1, F2, F3 (Hz) at formant scale 1
  formant_weight: float = 0.05
  openness: float = 0.3  # mouth opening in [0, 1]
  open_weight: float = 0.3
  width: float = 0.5  # 0 = rounded, 1 = spread
  width_weight: float = 0.1
  voicing: float = 0.0  # gain of the voiced source
  aspiration: float = 0.0  # formant-shaped breath noise (/h/-like)
  noise: tuple[tuple[str, float], ...] = ()  # (band, gain) of frication/burst noise


def _vowel(f1: float, f2: float, f3: float, openness: float, width: float) -> tuple[Target, ...]:
  return (Target(ms=(90.0, 150.0), formants=(f1, f2, f3), formant_weight=1.0, openness=openness,
                 open_weight=1.0, width=width, width_weight=1.0, voicing=1.0),)


# Openness follows F1 and spreading follows F2, as for real vowels.
VOWELS: dict[str, tuple[Target, ...]] = {
    "i": _vowel(280.0, 2250.0, 2900.0, openness=0.12, width=1.0),
    "e": _vowel(400.0, 2050.0, 2650.0, openness=0.35, width=0.85),
    "E": _vowel(580.0, 1800.0, 2550.0, openness=0.6, width=0.75),
    "a": _vowel(780.0, 1250.0, 2500.0, openness=1.0, width=0.6),
    "O": _vowel(600.0, 950.0, 2450.0, openness=0.75, width=0.3),
    "o": _vowel(440.0, 850.0, 2400.0, openness=0.45, width=0.2),
    "u": _vowel(310.0, 800.0, 2300.0, openness=0.15, width=0.0),
}

_LIPS_SHUT = dict(openness=0.0, open_weight=8.0)
CONSONANTS: dict[str, tuple[Target, ...]] = {
    "p": (Target(ms=(60.0, 90.0), **_LIPS_SHUT),
          Target(ms=(15.0, 25.0), openness=0.15, open_weight=1.0, aspiration=0.4,
                 noise=(("labial", 1.0),))),
    "b": (Target(ms=(50.0, 70.0), voicing=0.15, **_LIPS_SHUT),
          Target(ms=(8.0, 12.0), openness=0.15, open_weight=1.0, voicing=0.3,
                 noise=(("labial", 0.6),))),
    "m": (Target(ms=(60.0, 90.0), formants=(250.0, 1100.0, 2300.0), formant_weight=0.7,
                 voicing=0.35, **_LIPS_SHUT),),
    "f": (Target(ms=(80.0, 110.0), openness=0.06, open_weight=4.0, width=0.6, width_weight=0.5,
                 noise=(("f", 0.35),)),),
    "v": (Target(ms=(60.0, 90.0), openness=0.06, open_weight=4.0, width=0.6, width_weight=0.5,
                 voicing=0.3, noise=(("f", 0.2),)),),
    "t": (Target(ms=(50.0, 80.0), openness=0.2, open_weight=0.6),
          Target(ms=(15.0, 25.0), openness=0.25, open_weight=0.5, aspiration=0.3,
                 noise=(("alveolar", 0.9),))),
    "d": (Target(ms=(40.0, 60.0), openness=0.2, open_weight=0.6, voicing=0.15),
          Target(ms=(8.0, 12.0), openness=0.25, open_weight=0.5, voicing=0.3,
                 noise=(("alveolar", 0.6),))),
    "n": (Target(ms=(50.0, 80.0), formants=(250.0, 1600.0, 2600.0), formant_weight=0.7,
                 openness=0.2, open_weight=0.6, voicing=0.35),),
    "s": (Target(ms=(90.0, 130.0), openness=0.12, open_weight=1.5, width=0.8, width_weight=1.0,
                 noise=(("s", 0.7),)),),
    "z": (Target(ms=(70.0, 100.0), openness=0.12, open_weight=1.5, width=0.8, width_weight=1.0,
                 voicing=0.3, noise=(("s", 0.5),)),),
    "l": (Target(ms=(40.0, 70.0), formants=(360.0, 1100.0, 2700.0), formant_weight=0.7,
                 openness=0.3, open_weight=0.5, voicing=0.6),),
    "k": (Target(ms=(60.0, 90.0), openness=0.3, open_weight=0.4),
          Target(ms=(20.0, 30.0), openness=0.3, open_weight=0.4, aspiration=0.3,
                 noise=(("velar", 0.9),))),
    "g": (Target(ms=(40.0, 60.0), openness=0.3, open_weight=0.4, voicing=0.15),
          Target(ms=(10.0, 15.0), openness=0.3, open_weight=0.4, voicing=0.3,
                 noise=(("velar", 0.6),))),
    "S": (Target(ms=(90.0, 130.0), openness=0.15, open_weight=1.5, width=0.15, width_weight=3.0,
                 noise=(("sh", 0.7),)),),
}
PAUSE = Target(ms=(40.0, 120.0), openness=0.03, open_weight=1.5, width=0.5, width_weight=0.3)

VOCABULARY = (
    "ma", "pi", "bolu", "tami", "nesa", "kOfe", "lipa", "sumo", "dEki", "gaSu", "vito", "fanu",
    "zOle", "mupi", "teba", "kalomi", "sinEpa", "butega", "Somi", "dafo", "linu", "pOsa", "gemu",
    "nuvE",
)
