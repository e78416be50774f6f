"""The run directory: layout, file names, manifest, integrity checks, and what a run holds.

This module is the only code that names a run directory's files and knows which stages and
ensemble members a run holds (:meth:`RunDirectory.finished_stages`, :meth:`RunDirectory.representations`).

::

    RUN_DIR/
      config.yaml            resolved config
      manifest.json          format version, config/data fingerprints, sha256 of every finished file
      stage-1/ ... stage-S/
        encoder.safetensors  weights of the stage's encoder (backbone + head)
        pseudo_labels.safetensors   the pseudo-labels this stage trained with (stage >= 2)
        clusters.safetensors centroids, labels, sizes of k-means on this stage's embeddings
        clusters.json        inertia, sizes, iterations, backend
        diagnostics.json     label-free diagnostics of the stage (mcl.diagnostics)
        views.safetensors    two seeded augmented views of the diagnostics' view rows, embedded (view_novelty)
        embeddings.npy       (N, D) float32/float16 map of the training set's embeddings that k-means read
        metrics.jsonl        one line per epoch: loss, lr, throughput
        checkpoint.*         last epoch checkpoint while the stage is running (resume)
      ensemble-2/ ...        extra seeds of single-stage training for the ensemble-k baseline
      finetune-1/ ...        the finetune-k baseline (eval.finetune_baseline): plain fine-tuning, same steps
      stage-0/               (runs that cluster an initial model first) its weights and clusters
      tokenizer.json         (small two-tower models) the word vocabulary every stage shares
      eval.json              ``mcl eval``: one row per representation, attribute and probe
      report/report.html     ``mcl report``: self-contained HTML, with its PNGs beside it

Every file is written atomically; the manifest is the single source of truth of what finished,
and a finished file whose checksum no longer matches stops the run with a clear message.

Resuming: ``mcl train`` on a directory that holds a manifest continues the run if the config and
the data set are the ones it started with (``--resume`` additionally insists that there is a run
to continue); every recorded file is verified against its checksum first.
"""

from __future__ import annotations

import contextlib
import logging
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mcl import distributed
from mcl.config import FORMAT_VERSION, Config, load_config
from mcl.errors import RunDirError
from mcl.files import read_json, sha256_file, write_json
from mcl.run_identity import changed_keys, config_fingerprint, training_values
from mcl.run_lock import check_out_dir, writer_lock

logger = logging.getLogger("mcl")

# (path, inode, size, mtime_ns, sha256) of files this process has hashed and found intact.
_VERIFIED: set[tuple[str, int, int, int, str]] = set()


def _identity(path: Path) -> tuple[str, int, int, int]:
    """(resolved path, inode, size, mtime_ns): what changes when a file is rewritten or modified."""
    stat = path.stat()
    return str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns

T = TypeVar("T")

# Every file name of the layout above, named once.
MANIFEST = "manifest.json"
CONFIG_FILE = "config.yaml"
ENCODER_FILE = "encoder.safetensors"
CLUSTERS_FILE = "clusters.safetensors"
CLUSTERS_INFO_FILE = "clusters.json"
EMBEDDINGS_FILE = "embeddings.npy"
PSEUDO_LABELS_FILE = "pseudo_labels.safetensors"
PSEUDO_LABELS_INFO_FILE = "pseudo_labels.json"
DIAGNOSTICS_FILE = "diagnostics.json"
VIEWS_FILE = "views.safetensors"  # two augmented views of the diagnostics' view rows, embedded by the stage
AUTO_STAGES_FILE = "stages_auto.json"  # mcl.stages: auto: the last decision and why
CHECKPOINT_FILE = "checkpoint.safetensors"
METRICS_FILE = "metrics.jsonl"
TOKENIZER_FILE = "tokenizer.json"
EVAL_FILE = "eval.json"
MMVP_FILE = "mmvp.json"
REPORT_DIR = "report"
REPORT_FILE = "report.html"
DATA_DIR = "data"  # generated or imported data sets (mcl.data.resolve)
DATA_FILES = "data_files.npz"  # every data file's size and mtime when the run started (mcl.data.data_files)


@dataclass(frozen=True)
class Representation:
    """One row of the evaluation: a name and the run members (directory names) it integrates.

    ``stage-2`` -> ``("stage-2",)``; ``mcl-3`` -> ``("stage-1", "stage-2", "stage-3")``;
    ``ensemble-3`` -> ``("stage-1", "ensemble-2", "ensemble-3")``; ``stage-0`` -> ``("stage-0",)``.
    """

    name: str
    members: tuple[str, ...]

    @property
    def stages(self) -> tuple[int, ...] | None:
        """The stage numbers it integrates (``mcl-3`` -> ``(1, 2, 3)``); None when it holds ensemble members."""
        if any(not member.startswith("stage-") for member in self.members):
            return None
        return tuple(int(member.removeprefix("stage-")) for member in self.members)


class RunDirectory:
    """Paths and the manifest of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """Create the directory and hold its writer lock meanwhile (:mod:`mcl.run_lock`; rank 0 only).

        Refuses a directory that is neither empty nor an mcl run, and one another process is writing.
        """
        if not distributed.is_main_process():
            self.root.mkdir(parents=True, exist_ok=True)
            yield
            return
        check_out_dir(self.root, MANIFEST, CONFIG_FILE)
        self.root.mkdir(parents=True, exist_ok=True)
        with writer_lock(self.root):
            yield

    def stage_dir(self, stage: int) -> Path:
        """``stage-<s>/`` (1-based; 0 is the initial model of runs that cluster one)."""
        return self.root / f"stage-{stage}"

    def member_dir(self, member: str) -> Path:
        """The directory of a member named like ``stage-2`` or ``ensemble-3``."""
        return self.root / member

    def weights(self, member: str) -> Path:
        """The final weights of a member (``stage-2`` -> ``stage-2/encoder.safetensors``)."""
        return self.member_dir(member) / ENCODER_FILE

    @property
    def config_path(self) -> Path:
        """The resolved config the run was started with."""
        return self.root / CONFIG_FILE

    def config(self) -> Config:
        """The resolved config this run directory was trained with."""
        if not self.config_path.exists():
            raise RunDirError(f"{self.root}: not a run directory (no {CONFIG_FILE}); train one with 'mcl train'")
        return load_config(self.config_path)

    # ---- what the run holds: the one place that lists stages, ensemble members and representations

    def finished_stages(self, config: Config) -> list[int]:
        """Stages 1, 2, ... with recorded final weights, up to the first unfinished one.

        A later stage trains on the clusters of every earlier one, so stages after a gap cannot
        exist in a consistent run; they are ignored here (and reported by :meth:`unfinished_stages`).
        """
        return list(range(1, 1 + self._leading_finished([f"stage-{s}" for s in range(1, config.mcl.stages + 1)])))

    def unfinished_stages(self, config: Config) -> list[int]:
        """The configured stages without recorded final weights."""
        done = set(self.finished_stages(config))
        return [s for s in range(1, config.mcl.stages + 1) if s not in done]

    def finished_ensemble_members(self, config: Config) -> list[int]:
        """Extra ``ensemble-k`` members (k = 2, 3, ...) with final weights, up to the first unfinished one."""
        count = self._leading_finished([f"ensemble-{k}" for k in range(2, config.mcl.stages + 1)])
        return list(range(2, 2 + count))

    def has_stage0(self) -> bool:
        """Whether the run recorded an initial model as stage 0 (runs that cluster it before stage 1)."""
        return self.exists() and self.is_finished(self.weights("stage-0"))

    def representations(self, config: Config, include_stage0: bool = False) -> list[Representation]:
        """Every representation the finished members allow: stage-s, mcl-k, ensemble-k, finetune-k (and stage-0).

        ``include_stage0``: stage 0 is a member of every ``mcl-k`` too (``multimodal.integrate_stage0``); then
        ``finetune-concat-k`` (stage 0 + finetune-1..k) is mcl-k's baseline of the same size and compute.
        """
        stages = self.finished_stages(config)
        stage0 = self.has_stage0()
        out = [Representation("stage-0", ("stage-0",))] if stage0 else []
        out += [Representation(f"stage-{s}", (f"stage-{s}",)) for s in stages]
        lead = ("stage-0",) if stage0 and include_stage0 else ()
        # mcl-1 exists only when stage 0 is integrated too (stage-1 alone is already a row).
        out += [Representation(f"mcl-{k}", lead + tuple(f"stage-{s}" for s in range(1, k + 1)))
                for k in range(1 if lead else 2, len(stages) + 1)]
        if stages:
            members = ("stage-1",)
            for k in self.finished_ensemble_members(config):
                members += (f"ensemble-{k}",)
                out.append(Representation(f"ensemble-{k}", members))
        finetune = self.finished_finetune_members(config)
        out += [Representation(f"finetune-{k}", (f"finetune-{k}",)) for k in finetune]
        # mcl-k's equal-size baseline when it holds stage 0: stage 0 + finetune-1..k, integrated the same way.
        out += [Representation(f"finetune-concat-{k}", lead + tuple(f"finetune-{j}" for j in range(1, k + 1)))
                for k in (finetune if lead else [])]
        return out

    def finished_finetune_members(self, config: Config) -> list[int]:
        """``finetune-k`` baseline members (k = 1, 2, ...) with final weights, up to the first unfinished one."""
        return list(range(1, 1 + self._leading_finished([f"finetune-{k}" for k in range(1, config.mcl.stages + 1)])))

    def _leading_finished(self, members: list[str]) -> int:
        count = 0
        for member in members:
            if not self.is_finished(self.weights(member)):
                break
            count += 1
        return count

    def latest_weights_time(self) -> float:
        """Modification time of the newest recorded member weights (0 when none): what results must be newer than."""
        recorded = self.read_manifest()["files"]
        times = [path.stat().st_mtime for path in self.root.glob(f"*/{ENCODER_FILE}")
                 if str(path.relative_to(self.root)) in recorded]
        return max(times, default=0.0)

    # ---- phases: load what finished, else compute, save and record it

    def phase(self, path: Path, compute: Callable[[], T], save: Callable[[T, Path], None],
              load: Callable[[Path], T]) -> T:
        """The result of one phase (e.g. ``stage-2/clusters``): loaded if recorded, else computed.

        ``compute`` runs on every rank (it may hold collectives); rank 0 saves the result with
        ``save(result, path)`` (atomically) and records it in the manifest; all ranks then wait.
        """
        if self.is_finished(path):
            return load(path)
        result = compute()
        if distributed.is_main_process():
            path.parent.mkdir(parents=True, exist_ok=True)
            save(result, path)
            self.record(path)
        distributed.barrier()
        return result

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

    def start(self, config: Config, data_fingerprint: dict[str, Any], files: Any = None) -> dict[str, Any]:
        """Create the manifest, or check that an existing run matches this config and data.

        ``files`` (a :class:`~mcl.data.data_files.DataFiles`) is kept beside the manifest so that a resume
        on changed data can name the first changed file. Keys recorded by only one side (a run started
        before a key existed; a content digest taken on one start only) are not compared.
        """
        if self.exists():
            manifest = self.read_manifest()
            self._check_config(manifest, config)
            recorded = manifest.get("data")
            if not isinstance(recorded, dict) or any(recorded[key] != data_fingerprint[key]
                                                     for key in recorded if key in data_fingerprint):
                changed = files.changed_since(self.root / DATA_FILES) if files is not None else None
                what = f"{changed} changed" if changed else f"recorded {recorded}, now {data_fingerprint}"
                raise RunDirError(f"{self.manifest_path}: the data set differs from the one this run started with "
                                  f"({what}); resume on the data it started with, or start afresh in a new "
                                  "--out directory")
            self.verify(manifest)
            self._remove_stale_temporaries()
            return manifest
        if files is not None:
            files.save(self.root / DATA_FILES)
        manifest = {"format_version": FORMAT_VERSION, "config_fingerprint": config_fingerprint(config),
                    "config": training_values(config), "data": data_fingerprint, "files": {}}
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
        """``stage-*``, ``ensemble-*`` then ``finetune-*`` directories that exist, each kind in numeric order."""
        def number(path: Path) -> int:
            suffix = path.name.rsplit("-", 1)[-1]
            return int(suffix) if suffix.isdigit() else 0

        return [path for kind in ("stage", "ensemble", "finetune")
                for path in sorted((p for p in self.root.glob(f"{kind}-*") if p.is_dir()), key=number)]

    def record(self, *paths: Path) -> None:
        """Mark finished files in the manifest with their sha256 (after they were written atomically)."""
        manifest = self.read_manifest()
        for path in paths:
            identity = _identity(Path(path))
            checksum = sha256_file(path)
            manifest["files"][str(Path(path).relative_to(self.root))] = checksum
            _VERIFIED.add((*identity, checksum))  # just hashed: the next check of the unchanged file need not
        write_json(self.manifest_path, manifest)

    def verify(self, manifest: dict[str, Any] | None = None) -> None:
        """Check every recorded file against its checksum; raises :class:`RunDirError` on the first bad one."""
        files = (manifest or self.read_manifest())["files"]
        for key in files:
            self._check(self._entry(key), files[key])

    def _entry(self, key: Any) -> Path:
        """The file a manifest key names: a relative path inside the run (``../x``, ``/dev/zero`` refused)."""
        parts = Path(key).parts if isinstance(key, str) else ()
        if not parts or Path(key).is_absolute() or ".." in parts:
            raise RunDirError(f"{self.manifest_path}: entry {key!r} is not a path inside the run directory; "
                              f"remove it from {MANIFEST}")
        return self.root / key

    def _check(self, path: Path, checksum: str) -> None:
        if not isinstance(checksum, str):
            raise RunDirError(f"{self.manifest_path}: the checksum of {path.name} is not a string")
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise RunDirError(f"{path}: recorded as finished in {MANIFEST} but missing") from None
        except OSError as exc:
            raise RunDirError(f"{path}: cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(info.st_mode):  # a symlink to /dev/zero, a FIFO: never opened
            raise RunDirError(f"{path}: recorded in {MANIFEST} but not a regular file; restore it")
        # Hashing a ViT-L-sized member on every listing is seconds; a file whose identity, size and mtime are
        # unchanged since this process hashed it (verified or recorded) is not hashed again (make's and rsync's rule).
        identity = (*_identity(path), checksum)
        if identity in _VERIFIED:
            return
        if sha256_file(path) != checksum:
            raise RunDirError(f"{path}: checksum differs from {MANIFEST} (truncated or modified file); restore "
                              f"it, or delete it and its entry in {MANIFEST} to recompute it")
        _VERIFIED.add(identity)

    def is_finished(self, *paths: Path) -> bool:
        """True if every path is recorded and still matches its checksum; raises if one was corrupted."""
        files = self.read_manifest()["files"]
        for path in paths:
            key = str(Path(path).relative_to(self.root))
            if key not in files:
                return False
            self._check(Path(path), files[key])
        return True
