"""Makes the fake Modbus link in ``fake_modbus.py`` importable by the test modules.

The suite runs with ``--import-mode=importlib``, which leaves ``sys.path`` alone, so the
directory is added here, once, before the modules of this directory are collected.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
