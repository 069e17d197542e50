"""Where the real talking-face clips of the tests are: $SYNCLIPMAE_HDTF, else ../shared beside
the repository (the layout of the development machines and CI), else /work/shared."""

from __future__ import annotations

import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CANDIDATES = [os.environ.get("SYNCLIPMAE_HDTF", ""),
               os.path.join(_REPO, "..", "shared", "fixtures", "hdtf"),
               "/work/shared/fixtures/hdtf"]
HDTF = next((os.path.normpath(p) for p in _CANDIDATES if p and os.path.isdir(p)), None)
if HDTF is None:
  raise FileNotFoundError(f"the HDTF fixture clips are in none of {[p for p in _CANDIDATES if p]}; "
                          "set SYNCLIPMAE_HDTF to their folder")
