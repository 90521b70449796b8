"""Small C kernels built on first use with the system's compiler, loaded through ``ctypes``.

A few inner loops of the training code (the ℓ0 projection's passes, the GCN's 7-wide output
layer) cost several torch ops each, every one a full pass over memory; one C loop does the same
work in one pass. The sources are plain C (no torch headers), so a build takes well under a
second; it happens once per source version into ``$FEDTICKET_CACHE`` (default
``~/.cache/fedticket``, else a temporary folder) with ``$CC`` or ``cc``. ``ctypes`` releases the
GIL during a call, so worker threads run kernels in parallel. With no compiler, a failed build,
or ``FEDTICKET_NATIVE=0``, :func:`load` returns None and callers run their torch ops instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}


def enabled() -> bool:
    """False when ``FEDTICKET_NATIVE=0`` asks for the torch ops everywhere."""
    return os.environ.get("FEDTICKET_NATIVE", "1") != "0"


def _cache_dirs() -> list[Path]:
    env = os.environ.get("FEDTICKET_CACHE")
    first = Path(env) if env else Path.home() / ".cache" / "fedticket"
    return [first, Path(tempfile.gettempdir()) / f"fedticket-{os.getuid()}"]


def _private(path: Path) -> bool:
    """True when ``path`` is ours and nobody else may write it: a shared-library cache that
    another user can write (a planted ``/tmp/fedticket-<uid>``) would run their code in ours."""
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _build(name: str, source: str, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    tag = hashlib.sha256((source + str(cc)).encode()).hexdigest()[:16]
    for root in _cache_dirs():
        so = root / f"{name}-{tag}.so"
        try:
            if not so.exists():
                if not cc:
                    return None
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=root) as tmp:
                    src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
                    src.write_text(source)
                    subprocess.run([cc, "-O3", "-shared", "-fPIC", "-o", str(out), str(src)],
                                   check=True, capture_output=True, timeout=120)
                    os.replace(out, so)  # atomic: a concurrent build never loads half a file
            if not (_private(root) and _private(so)):
                continue
            lib = ctypes.CDLL(str(so))
            declare(lib)
            return lib
        except (OSError, AttributeError, subprocess.SubprocessError):
            continue
    return None


def load(name: str, source: str, declare: Callable[[ctypes.CDLL], None]) -> ctypes.CDLL | None:
    """The library built from ``source`` (``declare`` sets its functions' ctypes signatures),
    or None when kernels are switched off or cannot be built."""
    if not enabled():
        return None
    with _lock:
        if name not in _loaded:
            _loaded[name] = _build(name, source, declare)
    return _loaded[name]


__all__ = ["enabled", "load"]
