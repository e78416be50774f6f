"""The run directory: layout, manifest and integrity checks.

::

    RUN_DIR/
      config.yaml            resolved config
      manifest.json          format version, config/data fingerprints, sha256 of every finished file
      stage-1/ ... stage-S/
        encoder.safetensors  weights of the stage's encoder (backbone + head)
        pseudo_labels.safetensors   the pseudo-labels this stage trained with (stage >= 2)
        clusters.safetensors centroids, labels, sizes of k-means on this stage's embeddings
        clusters.json        inertia, sizes, iterations, backend
        metrics.jsonl        one line per epoch: loss, lr, throughput
        checkpoint.*         last epoch checkpoint while the stage is running (resume)
      ensemble-2/ ...        extra seeds of single-stage training for the ensemble-k baseline
      eval.json
      report/report.html     ``mcl report``: self-contained HTML, with its PNGs beside it

Every file is written atomically; the manifest is the single source of truth of what finished,
and a finished file whose checksum no longer matches stops the run with a clear message.

Resuming: ``mcl train`` on a directory that holds a manifest continues the run if the config and
the data set are the ones it started with (``--resume`` additionally insists that there is a run
to continue); every recorded file is verified against its checksum first.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from mcl.config import FORMAT_VERSION, Config
from mcl.errors import RunDirError
from mcl.io import read_json, sha256_file, write_json

logger = logging.getLogger("mcl")

MANIFEST = "manifest.json"


def _training_values(config: Config) -> dict[str, Any]:
    """The config keys that change what training computes, as a nested dict."""
    values = config.to_dict()
    values["train"].pop("threads", None)  # parallelism does not change the result's meaning
    values["train"].pop("device", None)
    values.pop("eval", None)
    return values


def config_fingerprint(config: Config) -> str:
    """Hash of everything in the config that changes what training computes."""
    return hashlib.sha256(json.dumps(_training_values(config), sort_keys=True).encode()).hexdigest()[:16]


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": inner for name, inner in value.items()})
        else:
            flat[key] = value
    return flat


def changed_keys(started: dict[str, Any], config: Config) -> list[str]:
    """``key (old -> new)`` for every training key that differs from the values a run started with.

    A key that did not exist when the run started (added to mcl since) counts as unchanged if it
    has its default value, so upgrading mcl does not strand runs in progress.
    """
    old, new = _flatten(started), _flatten(_training_values(config))
    default = _flatten(_training_values(Config()))
    missing = object()
    changed = []
    for key in dict.fromkeys([*old, *new]):
        before, after = old.get(key, default.get(key, missing)), new.get(key, missing)
        if before != after:
            changed.append(f"{key} ({'absent' if before is missing else repr(before)} -> "
                           f"{'absent' if after is missing else repr(after)})")
    return changed


class RunDirectory:
    """Paths and the manifest of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def stage_dir(self, stage: int) -> Path:
        """``stage-<s>/`` (1-based)."""
        return self.root / f"stage-{stage}"

    def ensemble_dir(self, member: int) -> Path:
        """``ensemble-<j>/`` for the j-th extra seed (j >= 2; member 1 is stage 1)."""
        return self.root / f"ensemble-{member}"

    @property
    def manifest_path(self) -> Path:
        """Where the manifest lives."""
        return self.root / MANIFEST

    def exists(self) -> bool:
        """Whether a run was started here."""
        return self.manifest_path.exists()

    def require_existing(self) -> None:
        """Raise :class:`RunDirError` unless a run was started here (``mcl train --resume``)."""
        if not self.exists():
            raise RunDirError(f"{self.manifest_path}: not found, so there is no run to resume in {self.root}; "
                              "leave out --resume to start a new run there")

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, after a format-version check."""
        manifest = read_json(self.manifest_path)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise RunDirError(f"{self.manifest_path}: expected a JSON object with a 'files' mapping")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise RunDirError(f"{self.manifest_path}: run directory format version {version}, this mcl reads "
                              f"version {FORMAT_VERSION}; use a matching mcl or start a new run directory")
        return manifest

    def start(self, config: Config, data_fingerprint: dict[str, Any]) -> dict[str, Any]:
        """Create the manifest, or check that an existing run matches this config and data."""
        if self.exists():
            manifest = self.read_manifest()
            self._check_config(manifest, config)
            if manifest.get("data") != data_fingerprint:
                raise RunDirError(f"{self.manifest_path}: the data set differs from the one this run started with "
                                  f"(recorded {manifest.get('data')}, now {data_fingerprint}); use the same data "
                                  "to resume, or a new --out directory")
            self.verify(manifest)
            self._remove_stale_temporaries()
            return manifest
        manifest = {"format_version": FORMAT_VERSION, "config_fingerprint": config_fingerprint(config),
                    "config": _training_values(config), "data": data_fingerprint, "files": {}}
        write_json(self.manifest_path, manifest)
        return manifest

    def _check_config(self, manifest: dict[str, Any], config: Config) -> None:
        if "config" in manifest:
            changed = changed_keys(manifest["config"], config)
            mismatch, what = bool(changed), f" ({'; '.join(changed)})"
        else:  # manifests written before the values were kept: only the fingerprint can tell
            mismatch, what = manifest.get("config_fingerprint") != config_fingerprint(config), ""
        if mismatch:
            raise RunDirError(f"{self.root}/config.yaml: the config changed since this run started{what}; "
                              "use the same config to resume, or a new --out directory")

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of atomic writes a crash interrupted (never renamed, so never valid)."""
        for directory in [self.root, *self.member_dirs()]:
            for tmp in directory.glob(".*.tmp"):
                logger.info("removing %s, left by an interrupted write", tmp)
                tmp.unlink(missing_ok=True)

    def member_dirs(self) -> list[Path]:
        """``stage-*`` then ``ensemble-*`` directories that exist, each kind in numeric order."""
        def number(path: Path) -> int:
            suffix = path.name.rsplit("-", 1)[-1]
            return int(suffix) if suffix.isdigit() else 0

        stages = [p for p in self.root.glob("stage-*") if p.is_dir()]
        ensemble = [p for p in self.root.glob("ensemble-*") if p.is_dir()]
        return sorted(stages, key=number) + sorted(ensemble, key=number)

    def record(self, *paths: Path) -> None:
        """Mark finished files in the manifest with their sha256 (after they were written atomically)."""
        manifest = self.read_manifest()
        for path in paths:
            manifest["files"][str(Path(path).relative_to(self.root))] = sha256_file(path)
        write_json(self.manifest_path, manifest)

    def verify(self, manifest: dict[str, Any] | None = None) -> None:
        """Check every recorded file against its checksum; raises :class:`RunDirError` on the first bad one."""
        files = (manifest or self.read_manifest())["files"]
        for key in files:
            self._check(self.root / key, files[key])

    def _check(self, path: Path, checksum: str) -> None:
        if not path.exists():
            raise RunDirError(f"{path}: recorded as finished in {MANIFEST} but missing")
        if sha256_file(path) != checksum:
            raise RunDirError(f"{path}: checksum differs from {MANIFEST} (truncated or modified file); restore "
                              f"it, or delete it and its entry in {MANIFEST} to recompute it")

    def is_finished(self, *paths: Path) -> bool:
        """True if every path is recorded and still matches its checksum; raises if one was corrupted."""
        files = self.read_manifest()["files"]
        for path in paths:
            key = str(Path(path).relative_to(self.root))
            if key not in files:
                return False
            self._check(Path(path), files[key])
        return True
