"""Sending streams: the one statement of what a stream name is, and the name of the global scope.

Imports nothing from the project, so settings, signing, the schemas and every service can share it.
"""

from __future__ import annotations

import re
from typing import Final

# A stream name: lower case, starts with a letter or digit, at most 64 characters.
STREAM_NAME: Final = r"[a-z0-9][a-z0-9_.-]{0,63}"
STREAM_RE: Final = re.compile(rf"^{STREAM_NAME}$")
# The same rule for an API field where empty means "global" (stated in the OpenAPI document).
OPTIONAL_STREAM_PATTERN: Final = rf"^(?:{STREAM_NAME})?$"
GLOBAL_SCOPE: Final = "global"
