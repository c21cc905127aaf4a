"""Importing it puts the repository root on ``sys.path``, so that the scripts in ``benchmarks/`` run
from a checkout (``python benchmarks/<script>.py``) without installing the package. Step times are
measured by ``adaptkd bench`` (``docs/speed.md``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
