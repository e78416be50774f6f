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
      eval.json, report.html

Every file is written atomically; the manifest is the single source of truth of what finished,
and a finished file whose checksum no longer matches stops the run with a clear message.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mcl.config import FORMAT_VERSION, Config
from mcl.errors import RunDirError
from mcl.io import read_json, sha256_file, write_json

MANIFEST = "manifest.json"


def config_fingerprint(config: Config) -> str:
    """Hash of everything in the config that changes what training computes."""
    values = config.to_dict()
    values["train"].pop("threads", None)  # parallelism does not change the result's meaning
    values["train"].pop("device", None)
    values.pop("eval", None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


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

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, after a format-version check."""
        manifest = read_json(self.manifest_path)
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise RunDirError(f"{self.manifest_path}: run directory format version {version}, this mcl reads "
                              f"version {FORMAT_VERSION}; use a matching mcl or start a new run directory")
        return manifest

    def start(self, config: Config, data_fingerprint: dict[str, Any]) -> dict[str, Any]:
        """Create the manifest, or check that an existing run matches this config and data."""
        fingerprint = config_fingerprint(config)
        if self.exists():
            manifest = self.read_manifest()
            if manifest.get("config_fingerprint") != fingerprint:
                raise RunDirError(f"{self.root}/config.yaml: the config changed since this run started; "
                                  "use the same config to resume, or a new --out directory")
            if manifest.get("data") != data_fingerprint:
                raise RunDirError(f"{self.root}: the data set differs from the one this run started with "
                                  f"({manifest.get('data')} vs {data_fingerprint})")
            return manifest
        manifest = {"format_version": FORMAT_VERSION, "config_fingerprint": fingerprint,
                    "data": data_fingerprint, "files": {}}
        write_json(self.manifest_path, manifest)
        return manifest

    def record(self, *paths: Path) -> None:
        """Mark finished files in the manifest with their sha256 (after they were written atomically)."""
        manifest = self.read_manifest()
        for path in paths:
            manifest["files"][str(Path(path).relative_to(self.root))] = sha256_file(path)
        write_json(self.manifest_path, manifest)

    def is_finished(self, *paths: Path) -> bool:
        """True if every path is recorded and still matches its checksum; raises if one was corrupted."""
        files = self.read_manifest()["files"]
        for path in paths:
            key = str(Path(path).relative_to(self.root))
            if key not in files:
                return False
            if not Path(path).exists():
                raise RunDirError(f"{path}: recorded as finished in {MANIFEST} but missing")
            if sha256_file(path) != files[key]:
                raise RunDirError(f"{path}: checksum differs from {MANIFEST} (truncated or modified file)")
        return True
