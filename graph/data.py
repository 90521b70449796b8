"""Planetoid citation graphs (Cora, CiteSeer, PubMed) with the public split, offline-friendly.

Layout (PyG's): ``<data_root>/Planetoid/<Name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,graph,test.index}``.

The raw files are Python pickles, and reading them (PyG's ``read_planetoid_data``, the same reader
``Planetoid`` uses) unpickles them: a replaced ``ind.cora.x`` would run code. They are fixed,
published files (kimiyoung/planetoid), so every file is checked against its published size and
SHA-256 (:data:`RAW_SHA256`) *before* anything reads it, and a mismatch is refused with one line
naming the file. Nothing else is trusted: no ``processed/`` cache is read or written (PyG's
cache is a ``torch.load`` that falls back to full unpickling on some errors), the graph is
rebuilt from the verified raw files on every load (well under a second for Cora), so a
read-only data root is never written to. Missing files are downloaded into ``raw/`` when online
(and verified like any other); offline, one :class:`UserError` lists the files and where to put them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from torch_geometric.data import Data

from fedticket.errors import UserError

DATASETS = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
RAW_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"


def canonical_name(name: str) -> str:
    key = str(name).lower()
    if key not in DATASETS:
        import difflib

        hint = difflib.get_close_matches(key, list(DATASETS), n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"unknown dataset {name!r}{extra}; the graph side supports "
                        f"{', '.join(DATASETS)} (PyG Planetoid, public split)")
    return DATASETS[key]


def raw_files(name: str) -> list[str]:
    lower = canonical_name(name).lower()
    return [f"ind.{lower}.{s}" for s in RAW_SUFFIXES]


# (size in bytes, SHA-256) of each published raw file, from github.com/kimiyoung/planetoid (data/);
# Cora's and CiteSeer's were checked against that repository's files and the copies PyG
# downloads. ind.pubmed.allx (7.2 MB) is too large for the mirror these were taken from; it is
# checked by its git blob id in that repository instead (SHA-1 over "blob <size>\0" + content,
# the id GitHub serves it under), which pins the exact bytes just the same.
RAW_SHA256: dict[str, tuple[int, str]] = {
    "ind.cora.x": (22119, "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab"),
    "ind.cora.tx": (148025, "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a"),
    "ind.cora.allx": (257305, "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543"),
    "ind.cora.y": (4054, "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1"),
    "ind.cora.ty": (28135, "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad"),
    "ind.cora.ally": (47959, "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71"),
    "ind.cora.graph": (59847, "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d"),
    "ind.cora.test.index": (5000, "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875"),
    "ind.citeseer.x": (31087, "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6"),
    "ind.citeseer.tx": (260321, "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21"),
    "ind.citeseer.allx": (595021, "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668"),
    "ind.citeseer.y": (3014, "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924"),
    "ind.citeseer.ty": (24135, "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce"),
    "ind.citeseer.ally": (55623, "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95"),
    "ind.citeseer.graph": (61987, "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7"),
    "ind.citeseer.test.index": (5000, "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4"),
    "ind.pubmed.x": (23172, "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33"),
    "ind.pubmed.tx": (405505, "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d"),
    "ind.pubmed.y": (854, "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3"),
    "ind.pubmed.ty": (12135, "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd"),
    "ind.pubmed.ally": (224739, "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e"),
    "ind.pubmed.graph": (471808, "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9"),
    "ind.pubmed.test.index": (6000, "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5"),
}
RAW_GIT_BLOB_SHA1 = {"ind.pubmed.allx": "3b86bccf08111c37c632a9dd8ab63db25ea76361"}


def _digest(path: Path, name: str) -> tuple[str, str]:
    """(algorithm, hex digest) of ``path`` the way :data:`RAW_SHA256` / :data:`RAW_GIT_BLOB_SHA1` pin ``name``."""
    data = path.read_bytes()
    if name in RAW_GIT_BLOB_SHA1:
        return "git blob SHA-1", hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return "SHA-256", hashlib.sha256(data).hexdigest()


def verify_raw(name: str, raw_dir: str | os.PathLike) -> None:
    """Refuse (``UserError``, one line) any raw file whose size or hash is not the published one.

    Runs before any raw file is opened by a reader, so a planted pickle never gets unpickled.
    """
    raw_dir = Path(raw_dir)
    for f in raw_files(name):
        path = raw_dir / f
        fix = (f"delete it to download the published file again (online), or restore it from "
               f"{RAW_URL}/{f}")
        if f in RAW_SHA256:
            size, want = RAW_SHA256[f]
            got_size = path.stat().st_size
            if got_size != size:
                raise UserError(f"{path} is {got_size} bytes, the published file is {size}: "
                                f"not the Planetoid file, refusing to read it; {fix}")
        elif f in RAW_GIT_BLOB_SHA1:
            want = RAW_GIT_BLOB_SHA1[f]
        else:  # every published file is pinned above; a gap must not pass silently
            raise UserError(f"no published hash is known for {f}; refusing to unpickle it")
        algo, got = _digest(path, f)
        if got != want:
            raise UserError(f"{path} has {algo} {got[:16]}..., the published file has "
                            f"{want[:16]}...: not the Planetoid file, refusing to read it; {fix}")


def _missing_message(name: str, raw_dir: Path, cause: BaseException | None) -> str:
    files = raw_files(name)
    why = f" ({type(cause).__name__}: {cause})" if cause else ""
    return (f"{canonical_name(name)} is not available under {raw_dir} and could not be downloaded{why}. "
            f"Place these {len(files)} files in {raw_dir}: {', '.join(files)} "
            f"(from {RAW_URL}/), or pass --data-root / set FEDTICKET_DATA to a folder that has "
            f"Planetoid/{canonical_name(name)}/raw/")


def _download(name: str, raw_dir: Path, missing: list[str]) -> None:
    from torch_geometric.data import download_url

    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        for f in missing:
            download_url(f"{RAW_URL}/{f}", str(raw_dir), log=False)
    except Exception as e:  # URLError, HTTPError, OSError (read-only root), ...
        raise UserError(_missing_message(name, raw_dir, e)) from None


def load_planetoid(name: str, root: str | os.PathLike, normalize_features: bool = True) -> Data:
    """The single graph of a Planetoid dataset, public split, features row-normalised by default.

    ``root`` is the data root (the folder that holds ``Planetoid/``). Raises :class:`UserError`
    for an unknown name, missing files offline, or a raw file that is not the published one.
    """
    from torch_geometric.io import read_planetoid_data

    pyg_name = canonical_name(name)
    raw_dir = Path(root).expanduser() / "Planetoid" / pyg_name / "raw"
    missing = [f for f in raw_files(name) if not (raw_dir / f).is_file()]
    if missing:
        _download(name, raw_dir, missing)
    verify_raw(name, raw_dir)
    data = read_planetoid_data(str(raw_dir), pyg_name.lower())
    if normalize_features:
        import torch_geometric.transforms as T

        data = T.NormalizeFeatures()(data)
    data.name = pyg_name
    return data


def describe(data: Data) -> str:
    return (f"{getattr(data, 'name', 'graph')}: {data.num_nodes} nodes, "
            f"{data.num_edges // 2} undirected edges, {data.num_features} features, "
            f"{int(data.y.max()) + 1} classes, train/val/test = {int(data.train_mask.sum())}/"
            f"{int(data.val_mask.sum())}/{int(data.test_mask.sum())}")

