"""File-name conventions of re-ID data sets: Market-1501 / DukeMTMC-reID image names
``PPPP_cC..._NN.jpg`` carry the person id (-1 junk, 0 distractor) and the camera (1-based)."""
from __future__ import annotations

import re

MARKET_NAME = re.compile(r"^([-\d]+)_c(\d+)")
MARKET_PATTERN = "PPPP_cC..._NN.jpg"


def parse_market_name(name: str):
    """(person id, camera counted from 0) of a Market-style file name, or None."""
    match = MARKET_NAME.match(name)
    if not match:
        return None
    try:
        return int(match.group(1)), int(match.group(2)) - 1
    except ValueError:
        return None
