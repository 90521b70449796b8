"""The results folder every run writes: resolved config, CSV rows, summary.json and PNG plots."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml


def _jsonable(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _jsonable(obj.item())
        except (ValueError, RuntimeError):
            pass
    return obj


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None,
                       durable: bool = False) -> Path:
    """Write ``data`` via a temp file in the same folder + rename: never a half-written file.

    ``mode`` is set before any byte lands (a secret is never readable by others); ``durable``
    fsyncs the file and the folder, so the rename survives a power cut (checkpoints).
    """
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    return path


class RunDir:
    """A results folder. Writes are atomic (temp file + rename) so a crash never leaves half a file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def file(self, name: str) -> Path:
        return self.path / name

    def _atomic_write(self, name: str, text: str) -> Path:
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        return target

    def save_config(self, cfg: Mapping[str, Any], name: str = "config.yaml") -> Path:
        return self._atomic_write(name, yaml.safe_dump(_jsonable(dict(cfg)), sort_keys=False))

    def write_json(self, name: str, obj: Any) -> Path:
        return self._atomic_write(name, json.dumps(_jsonable(obj), indent=2) + "\n")

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        target = self.path / name
        fields: list[str] = []
        for r in rows:
            fields.extend(k for k in r if k not in fields)
        tmp = target.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in rows:
                w.writerow(_jsonable(dict(r)))
        os.replace(tmp, target)
        return target

    def append_csv(self, name: str, row: Mapping[str, Any]) -> Path:
        """Append one row, writing the header on first use (rows stream out as work completes)."""
        target = self.path / name
        new = not target.exists()
        with target.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(_jsonable(dict(row)))
        return target


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def plot_lines(path: str | os.PathLike, series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               xlabel: str, ylabel: str, title: str = "", *, yerr: Mapping[str, Sequence[float]] | None = None,
               logx: bool = False, marker: str = "o") -> Path:
    """One PNG with one curve per series label; optional error bands (e.g. std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, (xs, ys) in series.items():
        line, = ax.plot(list(xs), list(ys), marker=marker, markersize=3, label=label)
        if yerr and label in yerr:
            lo = [y - e for y, e in zip(ys, yerr[label])]
            hi = [y + e for y, e in zip(ys, yerr[label])]
            ax.fill_between(list(xs), lo, hi, alpha=0.2, color=line.get_color())
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
