"""Tests of finding, extracting and reading the SageMaker model artifact (connector.image_classification.artifact)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from bench.material import DIGITS_ARCHIVE, DIGITS_MODEL
from connector.image_classification import artifact
from connector.image_classification.errors import (
    ArchiveLimitExceededError,
    ConfigurationError,
    ModelArtifactError,
    UnsafeArchiveError,
)

SYMBOL = "image-classification-symbol.json"
PARAMS = "image-classification-0006.params"
SHAPES = "model-shapes.json"


def copy_model(destination: Path) -> Path:
    """The digits model's three artifact files (not its README) copied to `destination`."""
    destination.mkdir(parents=True)
    for name in (SYMBOL, PARAMS, SHAPES):
        shutil.copy(DIGITS_MODEL / name, destination / name)
    return destination


def tree(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- locate: layouts ----------------------------------------------------------------------------------------

def test_locate_flat_layout(tmp_path):
    model = copy_model(tmp_path / "model")
    found = artifact.locate(model, cache_dir=tmp_path / "cache")
    assert found.directory == model
    assert found.prefix == "image-classification"
    assert found.epoch == 6
    assert found.symbol_path == model / SYMBOL
    assert found.params_path == model / PARAMS
    assert found.shapes_path == model / SHAPES
    assert found.describe() == f"{SYMBOL} + {PARAMS} in {model}"
    assert not (tmp_path / "cache").exists()  # nothing extracted for a plain directory


def test_locate_the_shipped_test_model(digits_model):
    found = artifact.locate(digits_model)
    assert (found.directory, found.epoch) == (digits_model, 6)


def test_locate_one_directory_down(tmp_path):
    destination = tmp_path / "dest"
    model = copy_model(destination / "image-classifier")
    (destination / "notes").mkdir()
    (destination / "notes" / "readme.txt").write_text("not a model")
    found = artifact.locate(destination)
    assert found.directory == model
    assert found.params_path == model / PARAMS


def test_locate_ignores_hidden_subdirectories(tmp_path):
    destination = tmp_path / "dest"
    copy_model(destination / ".previous")
    model = copy_model(destination / "current")
    assert artifact.locate(destination).directory == model


def test_locate_does_not_look_two_levels_down(tmp_path):
    destination = tmp_path / "dest"
    copy_model(destination / "a" / "b")
    with pytest.raises(ModelArtifactError, match="no model under"):
        artifact.locate(destination)


def test_locate_picks_highest_numbered_params(tmp_path):
    model = copy_model(tmp_path / "model")
    for epoch in ("0002", "0010"):
        shutil.copy(model / PARAMS, model / f"image-classification-{epoch}.params")
    found = artifact.locate(model)
    assert found.epoch == 10
    assert found.params_path == model / "image-classification-0010.params"


def test_locate_compares_epochs_as_numbers_and_ignores_odd_names(tmp_path):
    model = copy_model(tmp_path / "model")
    (model / PARAMS).rename(model / "image-classification-0009.params")
    shutil.copy(model / "image-classification-0009.params", model / "image-classification-0100.params")
    (model / "image-classification-99999.params").write_bytes(b"five digits: not an epoch file")
    (model / "image-classification-best.params").write_bytes(b"no epoch")
    found = artifact.locate(model)
    assert found.epoch == 100
    assert found.params_path.name == "image-classification-0100.params"


def test_locate_without_shapes_file(tmp_path):
    model = copy_model(tmp_path / "model")
    (model / SHAPES).unlink()
    found = artifact.locate(model)
    assert found.shapes_path is None
    assert artifact.read_model_shapes(found.shapes_path) is None


def test_locate_symbol_without_params_is_no_model(tmp_path):
    model = copy_model(tmp_path / "model")
    (model / PARAMS).unlink()
    with pytest.raises(ModelArtifactError, match="no model under"):
        artifact.locate(model)


def test_locate_prefers_image_classification_prefix(tmp_path):
    model = copy_model(tmp_path / "model")
    shutil.copy(model / SYMBOL, model / "other-symbol.json")
    shutil.copy(model / PARAMS, model / "other-0003.params")
    assert artifact.locate(model).prefix == "image-classification"


def test_locate_refuses_two_models_side_by_side(tmp_path):
    destination = tmp_path / "dest"
    first = copy_model(destination / "first")
    second = copy_model(destination / "second")
    with pytest.raises(ModelArtifactError) as info:
        artifact.locate(destination)
    message = str(info.value)
    assert f"more than one model found under {destination}" in message
    assert f"{SYMBOL} + {PARAMS} in {first}" in message
    assert f"{SYMBOL} + {PARAMS} in {second}" in message
    assert "Leave one model there." in message


def test_locate_refuses_two_other_prefixes_in_one_directory(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for prefix in ("alpha", "beta"):
        shutil.copy(DIGITS_MODEL / SYMBOL, model / f"{prefix}-symbol.json")
        shutil.copy(DIGITS_MODEL / PARAMS, model / f"{prefix}-0001.params")
    with pytest.raises(ModelArtifactError) as info:
        artifact.locate(model)
    assert "alpha-symbol.json + alpha-0001.params" in str(info.value)
    assert "beta-symbol.json + beta-0001.params" in str(info.value)


# --- locate: refusals ---------------------------------------------------------------------------------------

def test_locate_missing_destination(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(ModelArtifactError) as info:
        artifact.locate(missing)
    assert str(info.value) == (f"MLModelDestinationPath {missing} is not a directory: "
                               "deploy the ML resource there first")


def test_locate_destination_is_a_file(tmp_path):
    a_file = tmp_path / "model.params"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelArtifactError, match="is not a directory"):
        artifact.locate(a_file)


def test_locate_empty_directory_names_what_is_expected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelArtifactError) as info:
        artifact.locate(empty)
    message = str(info.value)
    assert f"no model under {empty}" in message
    for expected in ("image-classification-symbol.json", "image-classification-NNNN.params",
                     "model-shapes.json", "one directory down", "model.tar.gz"):
        assert expected in message


# --- locate: model.tar.gz -----------------------------------------------------------------------------------

@pytest.fixture
def archived_destination(tmp_path):
    """A destination path holding only the training job's model.tar.gz."""
    destination = tmp_path / "dest"
    destination.mkdir()
    shutil.copy(DIGITS_ARCHIVE, destination / "model.tar.gz")
    return destination


def test_locate_extracts_model_archive_into_cache(tmp_path, archived_destination):
    destination = archived_destination
    cache = tmp_path / "cache"
    found = artifact.locate(destination, cache_dir=cache)
    assert found.directory.parent == cache
    assert (found.directory / ".complete").is_file()
    assert found.epoch == 6
    assert found.params_path.read_bytes() == (DIGITS_MODEL / PARAMS).read_bytes()
    assert artifact.read_model_shapes(found.shapes_path) == (3, 28, 28)
    digest = found.directory.name
    assert tree(cache) == sorted([digest] + [f"{digest}/{n}" for n in (".complete", SYMBOL, PARAMS, SHAPES)])


def test_locate_reuses_the_extraction(tmp_path, archived_destination):
    destination = archived_destination
    cache = tmp_path / "cache"
    first = artifact.locate(destination, cache_dir=cache)
    marker = first.directory / "left-by-first-start"
    marker.write_text("a re-extraction would remove this")
    second = artifact.locate(destination, cache_dir=cache)
    assert second.directory == first.directory
    assert marker.read_text() == "a re-extraction would remove this"
    assert [p.name for p in cache.iterdir()] == [first.directory.name]


def test_incomplete_extraction_is_redone(tmp_path):
    cache = tmp_path / "cache"
    target = artifact.extract_cached(DIGITS_ARCHIVE, cache)
    (target / ".complete").unlink()
    (target / "stale").write_text("from an interrupted start")
    again = artifact.extract_cached(DIGITS_ARCHIVE, cache)
    assert again == target
    assert (again / ".complete").is_file()
    assert not (again / "stale").exists()
    assert (again / PARAMS).is_file()


def test_locate_finds_archive_one_directory_down(tmp_path):
    destination = tmp_path / "dest"
    (destination / "resource").mkdir(parents=True)
    shutil.copy(DIGITS_ARCHIVE, destination / "resource" / "model.tar.gz")
    found = artifact.locate(destination, cache_dir=tmp_path / "cache")
    assert found.directory.parent == tmp_path / "cache"


def test_locate_prefers_model_tar_gz_among_archives(tmp_path):
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "aaa.tar.gz").write_bytes(b"not an archive; sorted first but not model.tar.gz")
    shutil.copy(DIGITS_ARCHIVE, destination / "model.tar.gz")
    assert artifact.locate(destination, cache_dir=tmp_path / "cache").epoch == 6


def test_locate_corrupt_archive(tmp_path):
    destination = tmp_path / "dest"
    destination.mkdir()
    archive = destination / "model.tar.gz"
    archive.write_bytes(DIGITS_ARCHIVE.read_bytes()[:2000])
    cache = tmp_path / "cache"
    with pytest.raises(ModelArtifactError) as info:
        artifact.locate(destination, cache_dir=cache)
    assert not isinstance(info.value, UnsafeArchiveError)
    assert f"{archive} is not a readable tar.gz archive" in str(info.value)
    assert list(cache.iterdir()) == []


def test_locate_garbage_archive(tmp_path):
    destination = tmp_path / "dest"
    destination.mkdir()
    (destination / "model.tar.gz").write_bytes(b"this is plain text, not gzip")
    with pytest.raises(ModelArtifactError, match="is not a readable tar.gz archive"):
        artifact.locate(destination, cache_dir=tmp_path / "cache")


def test_locate_archive_without_model(tmp_path):
    destination = tmp_path / "dest"
    destination.mkdir()
    archive = destination / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_file(tar, "readme.txt", b"no model here")
    with pytest.raises(ModelArtifactError) as info:
        artifact.locate(destination, cache_dir=tmp_path / "cache")
    assert str(info.value) == (f"{archive} holds no image-classification-symbol.json with a matching "
                               "image-classification-NNNN.params")


def test_locate_archive_with_nested_model(tmp_path):
    destination = tmp_path / "dest"
    destination.mkdir()
    with tarfile.open(destination / "model.tar.gz", "w:gz") as tar:
        for name in (SYMBOL, PARAMS, SHAPES):
            tar.add(DIGITS_MODEL / name, arcname=f"output/{name}")
    found = artifact.locate(destination, cache_dir=tmp_path / "cache")
    assert found.directory.name == "output"
    assert found.epoch == 6


# --- unsafe archives ----------------------------------------------------------------------------------------

def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def malicious(tmp_path: Path, build) -> Path:
    """A model.tar.gz with the real model files first, then whatever `build` adds."""
    archive = tmp_path / "evil" / "model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name in (SYMBOL, PARAMS, SHAPES):
            tar.add(DIGITS_MODEL / name, arcname=name)
        build(tar)
    return archive


def absolute(tar):
    add_file(tar, "/tmp/ggic-test-absolute-member.txt", b"x")


def dotdot(tar):
    add_file(tar, "../escape", b"x")


def nested_dotdot(tar):
    add_file(tar, "sub/../../escape-too", b"x")


def symlink_out(tar):
    info = tarfile.TarInfo("evil-link")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../../../etc/passwd"
    tar.addfile(info)


def symlink_in(tar):
    info = tarfile.TarInfo("inner-link")
    info.type = tarfile.SYMTYPE
    info.linkname = SYMBOL
    tar.addfile(info)


def hard_link(tar):
    info = tarfile.TarInfo("hard")
    info.type = tarfile.LNKTYPE
    info.linkname = SYMBOL
    tar.addfile(info)


def char_device(tar):
    info = tarfile.TarInfo("null-device")
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


def fifo(tar):
    info = tarfile.TarInfo("pipe")
    info.type = tarfile.FIFOTYPE
    tar.addfile(info)


UNSAFE = [
    (absolute, "'/tmp/ggic-test-absolute-member.txt' has an absolute path"),
    (dotdot, "'../escape' would be written outside the model directory"),
    (nested_dotdot, "'sub/../../escape-too' would be written outside the model directory"),
    (symlink_out, "'evil-link' is a link ('../../../../etc/passwd')"),
    (symlink_in, f"'inner-link' is a link ({SYMBOL!r}); models hold plain files"),
    (hard_link, f"'hard' is a link ({SYMBOL!r})"),
    (char_device, "'null-device' is a device, FIFO or other special file"),
    (fifo, "'pipe' is a device, FIFO or other special file"),
]


@pytest.mark.parametrize("build, message", UNSAFE, ids=[b.__name__ for b, _ in UNSAFE])
def test_safe_extract_refuses(tmp_path, build, message):
    archive = malicious(tmp_path, build)
    destination = tmp_path / "out" / "model"
    destination.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError) as info:
        artifact.safe_extract(archive, destination)
    assert f"archive member {message}" in str(info.value)
    # Members are all checked before anything is written: not even the good files land.
    assert list(destination.iterdir()) == []
    assert not (tmp_path / "out" / "escape").exists()
    assert not Path("/tmp/ggic-test-absolute-member.txt").exists()


@pytest.mark.parametrize("build, message", UNSAFE, ids=[b.__name__ for b, _ in UNSAFE])
def test_extract_cached_refuses_and_leaves_nothing(tmp_path, build, message):
    archive = malicious(tmp_path, build)
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError) as info:
        artifact.extract_cached(archive, cache)
    assert message in str(info.value)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("build, message", UNSAFE[:3], ids=[b.__name__ for b, _ in UNSAFE[:3]])
def test_locate_refuses_unsafe_archive(tmp_path, build, message):
    archive = malicious(tmp_path, build)
    cache = tmp_path / "cache"
    with pytest.raises(UnsafeArchiveError, match="archive member"):
        artifact.locate(archive.parent, cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_unsafe_archive_error_is_a_model_artifact_error():
    assert issubclass(UnsafeArchiveError, ModelArtifactError)


def test_safe_extract_accepts_plain_files_and_directories(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("model")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        add_file(tar, "model/a.txt", b"hello")
        add_file(tar, "./b.txt", b"world")
    destination = tmp_path / "out"
    destination.mkdir()
    artifact.safe_extract(archive, destination)
    assert (destination / "model" / "a.txt").read_bytes() == b"hello"
    assert (destination / "b.txt").read_bytes() == b"world"


# --- bounded extraction (connector.contract.archives) ------------------------------------------------------

def test_a_gzip_bomb_model_archive_is_refused_naming_the_limit_and_leaves_nothing_in_the_cache(tmp_path):
    """Issue 16 finding 3: a small model.tar.gz whose params-named member is zeros used to fill the cache."""
    from bench.hostile_archives import bomb_tar_gz

    destination = tmp_path / "dest"
    destination.mkdir()
    members = {name: (DIGITS_MODEL / name).read_bytes() for name in (SYMBOL, SHAPES)}
    members["image-classification-0007.params"] = 1536  # MiB of zeros, about 1.6 MB on disk
    archive = bomb_tar_gz(destination / "model.tar.gz", members)
    assert archive.stat().st_size < 2 * 2 ** 20
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveLimitExceededError) as info:
        artifact.locate(destination, cache_dir=cache)
    assert isinstance(info.value, UnsafeArchiveError)
    assert (info.value.limit, info.value.member) == ("GGIC_ARCHIVE_MAX_RATIO", "image-classification-0007.params")
    assert str(info.value).startswith(f"{archive} is refused: archive member 'image-classification-0007.params'")
    assert list(cache.iterdir()) == []  # no entry, complete or not, and no staging directory


def test_too_many_members_in_a_model_archive_leave_nothing_in_the_cache(tmp_path, monkeypatch):
    from bench.hostile_archives import many_members_tar_gz

    archive = many_members_tar_gz(tmp_path / "model.tar.gz", 12)
    monkeypatch.setenv("GGIC_ARCHIVE_MAX_MEMBERS", "10")
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveLimitExceededError, match=r"member number 11, over the limit of 10 members "
                                                        r"\(GGIC_ARCHIVE_MAX_MEMBERS\)"):
        artifact.extract_cached(archive, cache)
    assert list(cache.iterdir()) == []
    monkeypatch.setenv("GGIC_ARCHIVE_MAX_MEMBERS", "12")
    assert (artifact.extract_cached(archive, cache) / ".complete").is_file()


def test_a_bad_limit_in_the_environment_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GGIC_ARCHIVE_MAX_TOTAL_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="GGIC_ARCHIVE_MAX_TOTAL_BYTES='lots' is not a number"):
        artifact.extract_cached(DIGITS_ARCHIVE, tmp_path / "cache")


# --- read_model_shapes --------------------------------------------------------------------------------------

def test_read_model_shapes_of_digits_model():
    assert artifact.read_model_shapes(DIGITS_MODEL / SHAPES) == (3, 28, 28)


def write(tmp_path: Path, content) -> Path:
    path = tmp_path / SHAPES
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_read_model_shapes_ignores_batch_and_other_inputs(tmp_path):
    path = write(tmp_path, [{"name": "softmax_label", "shape": [32]},
                            {"name": "data", "shape": [32, 1, 64, 48]}])
    assert artifact.read_model_shapes(path) == (1, 64, 48)


def test_read_model_shapes_entry_without_name_counts_as_data(tmp_path):
    assert artifact.read_model_shapes(write(tmp_path, [{"shape": [1, 3, 224, 224]}])) == (3, 224, 224)


@pytest.mark.parametrize("content", [
    "{not json",
    "",
    "null",
    [{"name": "data", "shape": [1, 3, 28]}],
    [{"name": "data", "shape": [1, 1, 3, 28, 28]}],
    [{"name": "data", "shape": [1, 3, 0, 28]}],
    [{"name": "data", "shape": [1, 3, "wide", 28]}],
    [{"name": "data", "shape": None}],
    [{"name": "data"}],
    [{"name": "label", "shape": [1, 3, 28, 28]}],
    [],
], ids=lambda c: repr(c)[:40])
def test_read_model_shapes_returns_none_for_bad_content(tmp_path, content, caplog):
    path = write(tmp_path, content)
    with caplog.at_level("WARNING", logger="connector.image_classification.artifact"):
        assert artifact.read_model_shapes(path) is None
    assert str(path) in caplog.text


def test_read_model_shapes_missing_file(tmp_path):
    assert artifact.read_model_shapes(tmp_path / "absent.json") is None


@pytest.mark.parametrize("content", [{"name": "data", "shape": [1, 3, 28, 28]}, [1, 3, 28, 28], "\"data\""],
                         ids=["object", "list-of-ints", "string"])
def test_read_model_shapes_wrong_structure_is_ignored(tmp_path, content):
    assert artifact.read_model_shapes(write(tmp_path, content)) is None
