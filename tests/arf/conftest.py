"""Import ``arf`` from this working tree.

An editable install made before ``arf/__init__.py`` existed registers ``arf`` as a namespace
package, which would skip the re-exports; putting the project root first on ``sys.path``
makes the regular package win whatever the install looks like.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
