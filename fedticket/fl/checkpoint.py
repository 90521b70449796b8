"""Server checkpoints: everything a resumed run needs, written atomically after every round.

Flower does not resume a failed run and does not keep a ServerApp's ``Context.state``, so the
server keeps its own. One safetensors file, ``checkpoint.safetensors`` in the results folder
(tensors and string metadata only: loading it never unpickles anything):

* ``mask.bits``     the SynFlow mask in core's one serialisation (layout in ``mask.layout``), so
                    a resumed run skips pruning and cannot drift
* ``global``        the global payload exactly as it travels (wire bytes + its kind)
* ``method.<name>`` the method's server state that outlives a round (``Method.state()``: a
                    server-held score, Beta counts, vote reputations), its names listed in the
                    metadata entry ``method_state``; checked against the resumed method's own
                    names, shapes and dtypes before it is loaded back
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
import logging
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
_METHOD = "method."           # prefix of the method-state tensors: cannot meet mask.* or global
_METHOD_STATE = "method_state"
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
    # Method.state() after the round; None: a checkpoint written before method state was saved
    method_state: dict[str, torch.Tensor] | None = field(default_factory=dict)


def save(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically (temp file in the same folder + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, meta = ckpt.mask.to_tensors(prefix=_MASK)
    tensors["global"] = torch.frombuffer(bytearray(ckpt.global_bytes), dtype=torch.uint8).clone()
    if ckpt.method_state is not None:   # None: the layout before method state (tests write it)
        tensors.update({_METHOD + k: v for k, v in ckpt.method_state.items()})
        meta[_METHOD_STATE] = json.dumps(sorted(ckpt.method_state))
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
        state = None
        if _METHOD_STATE in meta:
            names = json.loads(meta[_METHOD_STATE])
            stored = {k[len(_METHOD):] for k in tensors if k.startswith(_METHOD)}
            if sorted(stored) != sorted(names):
                raise ValueError(f"method state names {sorted(stored)} do not match the "
                                 f"listed {sorted(names)}")
            state = {k: tensors[_METHOD + k] for k in names}
        return Checkpoint(
            round=int(meta["round"]), config=json.loads(meta["config"]),
            mask=Mask.from_tensors(tensors, meta, prefix=_MASK),
            global_stype=meta["global_stype"], global_bytes=tensors["global"].numpy().tobytes(),
            rows=json.loads(meta["rows"]),
            stats={int(k): v for k, v in json.loads(meta["stats"]).items()},
            seconds=float(meta["seconds"]), fingerprint=meta.get("fingerprint", ""),
            method_state=state)
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


def restore_method_state(method, ckpt: Checkpoint, path: Path) -> None:
    """Give a resumed ``method`` (after ``initial_global()``) its checkpointed server state.

    The method's own fresh ``state()`` is the reference: the checkpoint must hold exactly its
    names, each with the same shape and dtype, or the resume is refused in one line naming the
    file and the fix. A checkpoint written before method state was saved resumes a method that
    keeps none (e.g. hidenseek's plain vote); one that keeps some is refused, since resuming
    without it would not continue the checkpointed run.
    """
    expected = method.state()
    saved = ckpt.method_state
    name = getattr(method, "name", "") or type(method).__name__
    if saved is None:
        if expected:
            raise UserError(
                f"{path} was written before checkpoints carried method state, and {name} keeps "
                f"server state across rounds ({', '.join(sorted(expected))}): resuming without "
                "it would not continue that run; start the run again in a new results folder, "
                "or resume it with the fedticket version that wrote the checkpoint")
        return
    problems = []
    for k in sorted(set(expected) | set(saved)):
        if k not in saved:
            problems.append(f"{k!r} missing")
        elif k not in expected:
            problems.append(f"{k!r} not kept by {name} at this config")
        elif (saved[k].shape, saved[k].dtype) != (expected[k].shape, expected[k].dtype):
            problems.append(f"{k!r} is {_describe(saved[k])}, expected {_describe(expected[k])}")
    if problems:
        raise UserError(f"{path} holds {name} server state that does not fit this run "
                        f"({'; '.join(problems)}); it was written by another fedticket version "
                        "or edited: move it away to start over, or resume it with the fedticket "
                        "version that wrote it")
    method.load_state({k: v.clone() for k, v in saved.items()})
    logging.getLogger("fedticket.fl").info("fedticket: %s server state restored from %s (%s)",
                                           name, path, ", ".join(sorted(saved)) or "none")


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


def stats_to_dict(stats) -> dict:
    return dataclasses.asdict(stats)
