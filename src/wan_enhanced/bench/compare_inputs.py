"""Input discovery for ``compare``: every report and peer file under the given paths, recursively.

A directory holding a suite manifest contributes its cases; any other directory is searched down to
its leaves. JSON files are taken by their schema: our run reports (``wan-enhanced/report``) and the
peer benchmark's ``peers.json`` (``wan-enhanced/peers``); other JSON (kernel benchmarks, logs) is
skipped silently. Of several runs of one case on one GPU the newest is kept, and that is said.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ReportError
from . import reportdata as rd
from .gpus import by_key
from .manifest import MANIFEST, load_manifest

REPORT_SCHEMA = "wan-enhanced/report"
PEERS_SCHEMA = "wan-enhanced/peers"


@dataclass
class Measured:
    """One measured run of a case on one machine."""

    case: str
    report: dict[str, Any]
    path: Path
    gpu: rd.GpuId
    entry: dict[str, Any] | None  # catalog entry of the GPU
    status: str
    created: str

    @property
    def label(self) -> str:
        """GPU label (with card count)."""
        return self.gpu.label

    @property
    def total_s(self) -> float | None:
        """Measured end-to-end seconds."""
        return rd.wall_s(self.report)


@dataclass
class PeerFile:
    """One ``peers.json``: records of several peers measured in one run on one GPU."""

    path: Path
    data: dict[str, Any]
    entry: dict[str, Any] | None


def _schema(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    for schema in (REPORT_SCHEMA, PEERS_SCHEMA):
        if f'"{schema}"' in head:
            return schema
    return None


def find_inputs(path: Path) -> tuple[list[tuple[str, Path]], list[Path]]:
    """((case, report path) pairs, peers.json paths) found under ``path``, recursively."""
    if path.is_file():
        if path.name == MANIFEST:
            return find_inputs(path.parent)
        return ([], [path]) if _schema(path) == PEERS_SCHEMA else ([(path.stem, path)], [])
    if not path.is_dir():
        raise ConfigError(f"compare: {str(path)!r} does not exist")
    manifest = load_manifest(path)
    if manifest is not None:
        out = []
        for c in manifest.get("cases") or []:
            p = path / (c.get("report") or f"{c.get('name')}.json")
            if p.exists():
                out.append((str(c.get("id") or c.get("name")), p))  # one per run of a repeated case
        return out, []
    reports: list[tuple[str, Path]] = []
    peers: list[Path] = []
    for sub in sorted(path.iterdir()):
        if sub.is_dir():
            r, p = find_inputs(sub)
            reports += r
            peers += p
        elif sub.suffix == ".json":
            schema = _schema(sub)
            if schema == REPORT_SCHEMA:
                reports.append((sub.stem, sub))
            elif schema == PEERS_SCHEMA:
                peers.append(sub)
    return reports, peers


def collect(inputs: Sequence[str | Path], catalog: list[dict[str, Any]], notes: list[str] | None = None
            ) -> tuple[list[Measured], list[PeerFile]]:
    """Load every report and peer file under ``inputs``; raises ConfigError when nothing is found."""
    notes = notes if notes is not None else []
    cat = by_key(catalog)
    runs: dict[tuple[str, str, int], Measured] = {}
    peer_files: list[PeerFile] = []
    for inp in inputs:
        files, peers = find_inputs(Path(inp))
        if not files and not peers:
            raise ConfigError(f"compare: no reports found in {str(inp)!r}")
        for f in peers:
            data = json.loads(f.read_text(encoding="utf-8"))
            name = str((data.get("meta") or {}).get("device") or "")
            from .gpus import match_entry

            peer_files.append(PeerFile(f, data, match_entry(name, catalog)))
        for case, f in files:
            try:
                rep = rd.read_report(f)
            except ReportError as exc:
                if Path(inp).is_file():
                    raise
                notes.append(f"skipped {f}: {exc}")
                continue
            gpu = rd.gpu_of(rep, catalog)
            m = Measured(case, rep, f, gpu, cat.get(gpu.key) if gpu.key else None, str(rep.get("status") or "failed"),
                         str(rep.get("created") or ""))
            k = (f"{f.parent}/{case}", gpu.key or gpu.name, gpu.count)
            old = runs.get(k)
            if old is not None:
                keep, drop = (m, old) if m.created >= old.created else (old, m)
                notes.append(f"{case} on {gpu.label}: several runs; kept {keep.path} ({keep.created}), ignored {drop.path}")
                runs[k] = keep
            else:
                runs[k] = m
    if not runs and not peer_files:
        raise ConfigError("compare: no readable reports in the inputs")
    return list(runs.values()), peer_files
