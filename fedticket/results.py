"""The results folder every run writes: resolved config, CSV rows, summary.json and PNG plots."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from fedticket.errors import UserError


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


# Files that mean "this folder holds computed results" (either side); config.yaml alone does not.
RESULT_FILES = ("summary.json", "rounds.csv", "levels.csv", "checkpoint.safetensors")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable(folder: Path, flag: str) -> None:
    """Probe with a real temp file (removed at once): permission bits say nothing for root,
    and a read-only mount or a full disk shows only when writing."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fedticket-probe-")
    except OSError as e:
        raise UserError(f"{flag} {folder}: cannot write there ({e.strerror}); choose a writable "
                        "folder") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False,
                     resume: bool | Callable[[Path], bool] = False, flag: str = "--out",
                     hint: str = "") -> Path:
    """Refuse a results folder before any work starts (one :class:`UserError`); creates nothing.

    Refused: a path that is a file (or lies under one), a folder that cannot be written, and a
    folder that already holds results (:data:`RESULT_FILES`) unless ``overwrite`` or ``resume``.
    ``resume`` is the caller's policy for continuing in place: a bool, or a function of the
    folder (e.g. "its config.yaml is this run's config", see :func:`same_config`); the caller
    then checks the folder's contents itself. ``hint`` is added to the refusal (how to continue).
    """
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is an existing file, not a folder; choose a folder")
    base = _nearest_existing(out)
    if not base.is_dir():
        raise UserError(f"{flag} {out}: {base} is a file, so no folder can be made under it; "
                        "choose another path")
    _check_writable(base, flag)
    if out.is_dir() and not overwrite:
        found = [n for n in RESULT_FILES if (out / n).exists()]
        if found and not (resume(out) if callable(resume) else resume):
            raise UserError(f"{flag} {out} already holds results ({', '.join(found)}); {hint}"
                            "choose another folder, or pass --overwrite to replace them")
    return out


def check_output_file(path: str | os.PathLike, *, force: bool = False,
                      flag: str = "--out") -> Path:
    """Refuse an output file path before any work starts: a folder, an unwritable place, or an
    existing file without ``force``. Creates nothing."""
    out = Path(path).expanduser()
    if out.is_dir():
        raise UserError(f"{flag} {out} is a folder; give a file name, e.g. {out / 'mask.safetensors'}")
    if out.exists() and not force:
        raise UserError(f"{flag} {out} already exists; choose another name, or pass --force to "
                        "replace it")
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {out}: folder {parent} does not exist; create it first")
    _check_writable(parent, flag)
    return out


def same_config(folder: str | os.PathLike, cfg: Mapping[str, Any],
                name: str = "config.yaml") -> bool:
    """Does ``folder/config.yaml`` hold exactly ``cfg`` (as :meth:`RunDir.save_config` wrote it)?"""
    f = Path(folder) / name
    try:
        return yaml.safe_load(f.read_text()) == _jsonable(dict(cfg))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False


def clear_results(folder: str | os.PathLike, names: Sequence[str]) -> None:
    """``--overwrite``: remove the named result files of an earlier run (nothing else)."""
    for n in names:
        for f in Path(folder).glob(n):
            if f.is_file():
                f.unlink()


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


class PlotProcess:
    """:func:`plot_lines` in a child process started early: its matplotlib import (0.4-0.7 s of one
    core here) then overlaps the caller's own start-up on the other core instead of adding to the
    end of the run. :meth:`plot_lines` queues a plot; :meth:`close` sends the queue, waits for
    the files, and where the child failed (or could not start) draws them in this process, so
    the files are always written by the same function. :meth:`cancel` ends the child (a run that
    failed before its plots)."""

    def __init__(self):
        import subprocess
        import sys

        self.jobs: list[dict] = []
        root = str(Path(__file__).resolve().parents[1])  # this fedticket, not another install
        env = {**os.environ, "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from fedticket.results import _plot_child; _plot_child()"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        except OSError:
            self.proc = None

    def plot_lines(self, path: str | os.PathLike, series, xlabel: str, ylabel: str,
                   title: str = "", **kw) -> Path:
        self.jobs.append({"path": str(path), "xlabel": xlabel, "ylabel": ylabel, "title": title,
                          "series": {k: [list(xs), list(ys)] for k, (xs, ys) in series.items()},
                          **{k: ({n: list(v) for n, v in w.items()} if k == "yerr" and w else w)
                             for k, w in kw.items()}})
        return Path(path)

    def close(self) -> None:
        jobs, self.jobs = self.jobs, []
        ok = False
        if self.proc is not None:
            try:
                self.proc.communicate(json.dumps(jobs).encode(), timeout=300)
                ok = self.proc.returncode == 0
            except Exception:  # noqa: BLE001 - any failure: draw them here instead
                self.cancel()
        if not ok:
            for job in jobs:
                plot_lines(**job)

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _plot_child() -> None:
    """The child of :class:`PlotProcess`: import matplotlib at once, then draw what stdin sends."""
    import sys

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (the slow import, done while the parent works)

    for job in json.loads(sys.stdin.read() or "[]"):
        plot_lines(**job)


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
