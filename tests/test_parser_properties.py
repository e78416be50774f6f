"""Property-based checks of every parser of user input (issue 20): random tar headers and member names,
labels.csv rows, YAML documents, ``--set`` overrides and manifests. Each either succeeds or raises an
:class:`~mcl.errors.MCLError` with a one-line message (exit 2); never another exception, a hang (the
deadline) or an unbounded read (the size limits). Fixed budget: ``derandomize=True`` and a set number of
examples per property, so the suite is the same on every run and machine.
"""

import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcl.config import Config, apply_overrides, config_from_dict, load_config
from mcl.config.schema import FORMAT_VERSION
from mcl.data.table import load_table
from mcl.data.webdataset import index_shards
from mcl.errors import MCLError
from mcl.run import RunDirectory

EXAMPLES = 60
BUDGET = settings(max_examples=EXAMPLES, deadline=5000, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_line_or_success(call):
    """Run ``call``; an MCLError must be one non-empty line, any other exception fails the property."""
    try:
        return call()
    except MCLError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message, message
        return None


def _tar(members: list[tuple[str, bytes]], fmt: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"
       b"\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=120)
extensions = st.sampled_from(["png", "jpg", "txt", "json", "seg.png", "", "tar", "PNG"])
member = st.tuples(names, extensions, st.sampled_from([PNG, b"", b"{}", b'{"split": "test"}', b"[1]", b"x" * 600,
                                                       b'{"split": 3}', b"\xff\xfe", b'{"a": {"b": [1, 2]}}']))


@BUDGET
@given(members=st.lists(member, min_size=1, max_size=6), fmt=st.sampled_from([tarfile.USTAR_FORMAT,
                                                                              tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
def test_random_member_names_and_contents(tmp_path_factory, members, fmt):
    root = tmp_path_factory.mktemp("names")
    entries = [(f"{name}.{ext}" if ext else name, data) for name, ext, data in members]
    try:
        raw = _tar(entries, fmt)
    except (ValueError, UnicodeEncodeError):  # a name this tar format cannot hold: nothing to read
        return
    (root / "a.tar").write_bytes(raw)
    _one_line_or_success(lambda: index_shards(root / "a.tar", max_text_bytes=512))


VALID_SHARD = _tar([("k0.png", PNG), ("k0.txt", b"a caption"), ("k0.json", b'{"split": "train", "c": "1"}'),
                    ("k1.png", PNG)], tarfile.USTAR_FORMAT)


@BUDGET
@given(edits=st.lists(st.tuples(st.integers(0, 3 * 512 - 1), st.binary(min_size=1, max_size=12)),
                      min_size=1, max_size=6),
       cut=st.none() | st.integers(0, len(VALID_SHARD)))
def test_random_tar_header_bytes(tmp_path_factory, edits, cut):
    data = bytearray(VALID_SHARD)
    for offset, patch in edits:  # headers of the first members, sizes (octal or base-256) included
        data[offset:offset + len(patch)] = patch
    shard = tmp_path_factory.mktemp("headers") / "a.tar"
    shard.write_bytes(bytes(data[:cut]))
    _one_line_or_success(lambda: index_shards(shard, max_text_bytes=4096))


cells = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@BUDGET
@given(header=st.lists(st.sampled_from(["path", "split", "caption", "shape", "", "Path", "path "]),
                       min_size=1, max_size=4),
       rows=st.lists(st.lists(cells, min_size=0, max_size=5), max_size=5))
def test_random_labels_csv(tmp_path_factory, header, rows):
    root = tmp_path_factory.mktemp("table")
    (root / "images").mkdir()
    (root / "images" / "a.png").write_bytes(PNG)
    text = ",".join(header) + "\n" + "".join(",".join(json.dumps(c) if "," in c else c for c in row) + "\n"
                                              for row in rows)
    (root / "labels.csv").write_text(text, encoding="utf-8", errors="surrogateescape")
    _one_line_or_success(lambda: load_table(root, image_size=8, progress=False, cache=False))


yaml_scalars = st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), st.text(max_size=12))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
sections = st.sampled_from(["data", "model", "objective", "augment", "train", "mcl", "eval", "multimodal",
                            "seed", "format_version", "nonsense"])


@BUDGET
@given(document=st.dictionaries(sections, yaml_values | st.dictionaries(
    st.sampled_from(["image_size", "n_train", "backbone", "backbone_args", "lr", "epochs", "stages", "clusters",
                     "seed", "queue_size", "projection_dim", "max_text_bytes", "source", "path", "typo"]),
    yaml_values, max_size=4), max_size=4))
def test_random_config_documents(tmp_path_factory, document):
    import yaml

    path = tmp_path_factory.mktemp("config") / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    result = _one_line_or_success(lambda: load_config(path))
    assert result is None or isinstance(result, Config)


@BUDGET
@given(text=st.text(max_size=200))
def test_random_yaml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    _one_line_or_success(lambda: load_config(path))


keys = st.sampled_from(["train.epochs", "train.lr", "seed", "data.image_size", "model.backbone_args",
                        "model.backbone_args.in_channels", "mcl.clusters", "objective.queue_size", "data.source",
                        "train", "nope.key", "train.epochs.deeper", ""])


@BUDGET
@given(overrides=st.lists(st.tuples(keys, st.text(max_size=30)), max_size=4))
def test_random_overrides(overrides):
    items = [f"{key}={value}" for key, value in overrides]
    _one_line_or_success(lambda: config_from_dict(apply_overrides({}, items)))


manifest_files = st.dictionaries(st.one_of(st.text(max_size=30), st.sampled_from(
    ["../x", "/dev/zero", "/etc/hostname", "stage-1/encoder.safetensors", ".", "", "a/../../b", "config.yaml"])),
    st.one_of(st.text(max_size=70), st.integers(), st.none()), max_size=4)


@BUDGET
@given(version=st.one_of(st.just(FORMAT_VERSION), st.integers(), st.text(max_size=4)), files=manifest_files,
       extra=st.booleans())
def test_random_manifests(tmp_path_factory, version, files, extra):
    root = tmp_path_factory.mktemp("run")
    (root / "config.yaml").write_text("train: {epochs: 1}\n")
    manifest = {"format_version": version, "files": files} if not extra else [version, files]
    (root / "manifest.json").write_text(json.dumps(manifest))
    _one_line_or_success(lambda: RunDirectory(root).verify())


def test_budget_is_fixed():
    assert BUDGET.max_examples == EXAMPLES and BUDGET.derandomize


@pytest.fixture(autouse=True)
def _quiet_mcl_logger():
    import logging

    logger = logging.getLogger("mcl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def test_paths_module_is_importable():
    assert Path(__file__).exists()
