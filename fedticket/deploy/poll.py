"""The one wait-until-true loop of the deployment code (process start, nodes online, run status)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll_until(check: Callable[[], T | None], timeout: float, interval: float = 0.5,
               what: str = "condition") -> T:
    """Call ``check`` every ``interval`` seconds until it returns something truthy; return that.

    ``check`` may raise to abort (e.g. the process it waits for has died). After ``timeout``
    seconds without success: ``TimeoutError`` naming ``what``. ``check`` always runs at least
    once, and once more at the deadline, so a slow first call cannot time out unseen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached after {timeout:g} s")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
