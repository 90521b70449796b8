"""Where datasets live: one resolution rule for both sides.

Order: explicit flag > config value > ``$FEDTICKET_DATA`` > ``./data``. Loaders download into this
root with torchvision / PyG conventions when online; offline they say which files to place where.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "FEDTICKET_DATA"


def resolve_data_root(flag: str | os.PathLike | None = None,
                      config: str | os.PathLike | None = None) -> Path:
    for candidate in (flag, config, os.environ.get(ENV_VAR)):
        if candidate not in (None, ""):
            return Path(candidate).expanduser()
    return Path("data")
