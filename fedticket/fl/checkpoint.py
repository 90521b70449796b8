"""Server checkpoints: everything a resumed run needs, written atomically after every round.

Flower does not resume a failed run and does not keep a ServerApp's ``Context.state``, so the
server keeps its own. One safetensors file, ``checkpoint.safetensors`` in the results folder
(tensors and string metadata only: loading it never unpickles anything):

* ``mask.bits``     the SynFlow mask in core's one serialisation (layout in ``mask.layout``), so
                    a resumed run skips pruning and cannot drift
* ``global``        the global payload exactly as it travels (wire bytes + its kind)
* metadata          format tag, completed round, seed, the resolved config, its fingerprint,
                    the metric rows and per-round stats so far, seconds spent so far, and the
                    SHA-256 of all of it (core's :mod:`~fedticket.core.tensorfile`): a damaged
                    checkpoint is refused, never resumed from. Checkpoints of the format before
                    the checksum (``fedticket.fl-checkpoint/1``) are refused too: they cannot
                    be verified.

The file is written to a temporary name in the same folder, fsynced, then renamed over the old
one: a crash at any point leaves either the previous round's checkpoint or this one, never half.
A round is *completed* when its checkpoint is on disk; resuming redoes the round after it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedticket.config import fingerprint as config_fingerprint
from fedticket.config import flatten, result_keys, to_dict
from fedticket.core import tensorfile
from fedticket.core.mask import Mask
from fedticket.errors import UserError
from fedticket.results import atomic_write_bytes

FORMAT_TAG = "fedticket.fl-checkpoint/2"
_MASK = "mask."
FILENAME = "checkpoint.safetensors"

def _relevant(cfg_dict: dict) -> dict[str, Any]:
    """The result-changing keys (schema metadata ``results``) and their values."""
    from fedticket.fl.config import FLConfig

    flat = flatten(cfg_dict)
    return {k: flat[k] for k in result_keys(FLConfig) if k in flat}


# the run's identity comes from the schema, like every other side's
fingerprint = config_fingerprint


@dataclass
class Checkpoint:
    round: int
    config: dict
    mask: Mask
    global_stype: str
    global_bytes: bytes
    rows: list[dict] = field(default_factory=list)
    stats: dict[int, dict] = field(default_factory=dict)
    seconds: float = 0.0
    fingerprint: str = ""


def save(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, meta = ckpt.mask.to_tensors(prefix=_MASK)
    tensors["global"] = torch.frombuffer(bytearray(ckpt.global_bytes), dtype=torch.uint8).clone()
    meta.update({
        "format": FORMAT_TAG,
        "round": str(ckpt.round),
        "seed": str(ckpt.config.get("seed")),
        "method": str(ckpt.config.get("method")),
        "fingerprint": ckpt.fingerprint,
        "config": json.dumps(ckpt.config, sort_keys=True, default=str),
        "global_stype": ckpt.global_stype,
        "rows": json.dumps(ckpt.rows),
        "stats": json.dumps({str(k): v for k, v in ckpt.stats.items()}),
        "seconds": repr(float(ckpt.seconds)),
    })
    return atomic_write_bytes(path, tensorfile.dumps(tensors, meta), durable=True)


def load(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint (UserError naming the file and the problem if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    fix = "move it away to start over, or restore it from a backup"
    try:
        tensors, meta = tensorfile.loads(path.read_bytes(), str(path), require_checksum=False)
    except tensorfile.ChecksumError as e:
        raise UserError(f"{e}; {fix}") from None
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is damaged or not a fedticket checkpoint ({e}); {fix}") from None
    fmt = meta.get("format")
    if fmt != FORMAT_TAG:
        raise UserError(f"{path} is not a fedticket federated checkpoint of this version (format "
                        f"{fmt!r}, expected {FORMAT_TAG!r}); move it away or choose another "
                        "results folder")
    if tensorfile.CHECKSUM_KEY not in meta:
        raise UserError(f"{path} has no checksum, so it cannot be verified; {fix}")
    try:
        return Checkpoint(
            round=int(meta["round"]), config=json.loads(meta["config"]),
            mask=Mask.from_tensors(tensors, meta, prefix=_MASK),
            global_stype=meta["global_stype"], global_bytes=tensors["global"].numpy().tobytes(),
            rows=json.loads(meta["rows"]),
            stats={int(k): v for k, v in json.loads(meta["stats"]).items()},
            seconds=float(meta["seconds"]), fingerprint=meta.get("fingerprint", ""))
    except (KeyError, ValueError, TypeError) as e:
        raise UserError(f"{path} is damaged or not a fedticket checkpoint ({e}); {fix}") from None


def check_compatible(ckpt: Checkpoint, cfg, path: Path) -> None:
    """The resumed run must compute the same thing: every result-changing key equal."""
    if ckpt.fingerprint == fingerprint(cfg):
        return
    old, new = _relevant(ckpt.config), _relevant(to_dict(cfg))
    diffs = [f"{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
    raise UserError(f"server.resume=true but the config differs from the checkpoint in {path} "
                    f"({shown or 'fingerprint mismatch'}); resume with the same config, or start "
                    "a new run in another results folder")


def stats_to_dict(stats) -> dict:
    return dataclasses.asdict(stats)
