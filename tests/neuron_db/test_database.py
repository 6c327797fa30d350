"""NeuronDB: open-time checks, lookups, search (ranking, filters, hostile text), encoders, concurrent readers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safesail_neuron_db import (
    ChecksumError,
    CorruptDatabaseError,
    DatabaseNotFoundError,
    FeatureNotFoundError,
    LayerNotFoundError,
    ManifestError,
    ModelMismatchError,
    NeuronDB,
    NeuronDBError,
    SchemaVersionError,
    default_database_path,
)
from tests.neuron_db.factory import FINGERPRINT, DBInputs, make_inputs, write_db


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DBInputs]:
    inputs = make_inputs(n_layers=2, n_features=12)
    return write_db(tmp_path_factory.mktemp("ndb") / "db", inputs), inputs


@pytest.fixture()
def db(built: tuple[Path, DBInputs]):
    with NeuronDB.open(built[0]) as handle:
        yield handle


@pytest.fixture()
def copy(built: tuple[Path, DBInputs], tmp_path: Path) -> Path:
    """A private copy of the database that a test may damage."""
    dst = tmp_path / "copy"
    dst.mkdir()
    for p in built[0].iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ---------------------------------------------------------------- opening
def test_errors_share_one_base_class() -> None:
    for cls in (ChecksumError, CorruptDatabaseError, DatabaseNotFoundError, FeatureNotFoundError, LayerNotFoundError,
                ManifestError, ModelMismatchError, SchemaVersionError):
        assert issubclass(cls, NeuronDBError)


def test_properties(db: NeuronDB) -> None:
    assert db.fingerprint == FINGERPRINT and db.layers == [3, 7] and db.site == "mlp_out"
    assert db.manifest.model.name == "tiny-test-model" and len(db) == 12 and "3_5" in db and "3_6" not in db


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DatabaseNotFoundError, match="safesail build-db"):
        NeuronDB.open(tmp_path / "nope")
    with pytest.raises(DatabaseNotFoundError, match="no manifest.json"):
        NeuronDB.open(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatabaseNotFoundError, match="is a file"):
        NeuronDB.open(tmp_path / "file")


def test_path_with_uri_special_characters(tmp_path: Path) -> None:
    path = write_db(tmp_path / "my db #1?%20&x=y", make_inputs(n_layers=1, n_features=2))
    with NeuronDB.open(str(path)) as db:
        assert len(db) == 2 and db.search("adult")


@pytest.mark.parametrize("name", ["features.sqlite", "encoders.safetensors"])
def test_flipped_byte_is_a_checksum_error(copy: Path, name: str) -> None:
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=name):
        NeuronDB.open(copy)
    NeuronDB.open(copy, verify=False).close()  # same size: only hashing can tell


def test_missing_or_truncated_file_even_without_verify(copy: Path) -> None:
    data = (copy / "encoders.safetensors").read_bytes()
    (copy / "encoders.safetensors").write_bytes(data[:-4])
    with pytest.raises(ChecksumError, match="bytes"):
        NeuronDB.open(copy, verify=False)
    (copy / "encoders.safetensors").unlink()
    with pytest.raises(ChecksumError, match="missing"):
        NeuronDB.open(copy, verify=False)


def test_unreadable_sqlite_without_verify_is_a_clean_error(copy: Path) -> None:
    data = bytearray((copy / "features.sqlite").read_bytes())
    data[0:16] = b"not a sqlite db!"
    (copy / "features.sqlite").write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError, match="features.sqlite"):
        NeuronDB.open(copy, verify=False)


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_wrong_schema_version(copy: Path, version: object) -> None:
    doc = json.loads((copy / "manifest.json").read_text())
    doc["schema_version"] = version
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(SchemaVersionError) as err:
        NeuronDB.open(copy)
    assert repr(version) in str(err.value) and "version 1" in str(err.value) and "safesail build-db" in str(err.value)


def test_broken_manifest(copy: Path) -> None:
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        NeuronDB.open(copy)
    doc = {"schema_version": 1, "site": "mlp_out"}
    (copy / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="invalid manifest"):
        NeuronDB.open(copy)


def test_model_mismatch_names_both_models(built: tuple[Path, DBInputs]) -> None:
    NeuronDB.open(built[0], expected_fingerprint=FINGERPRINT).close()
    with pytest.raises(ModelMismatchError) as err:
        NeuronDB.open(built[0], expected_fingerprint="0badc0de" * 8, expected_name="SmolLM2-360M")
    msg = str(err.value)
    assert "tiny-test-model" in msg and FINGERPRINT[:16] in msg and "0badc0de0badc0de" in msg and "SmolLM2-360M" in msg


def test_default_database_path() -> None:
    import safesail_neuron_db

    path = default_database_path()
    assert path == Path(safesail_neuron_db.__file__).resolve().parent / "data" / "smollm2-135m-instruct"
    assert default_database_path("other").name == "other"
    with pytest.raises(ValueError):
        default_database_path("../escape")


def test_import_does_not_load_torch() -> None:
    code = "import sys, safesail_neuron_db; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# ---------------------------------------------------------------- lookups
def test_info_counts(db: NeuronDB, built: tuple[Path, DBInputs]) -> None:
    inputs = built[1]
    info = db.info()
    assert info["counts"]["features"] == 12 and info["counts"]["per_layer"] == {"3": 6, "7": 6}
    per_domain: dict[str, int] = {}
    for f in inputs.features:
        for d in f.rec.domains:
            per_domain[d] = per_domain.get(d, 0) + 1
    assert info["counts"]["per_domain"] == per_domain
    statuses: dict[str, int] = {}
    for f in inputs.features:
        key = f.explanation.status if f.explanation else "skipped"
        statuses[key] = statuses.get(key, 0) + 1
    assert info["explanations"] == statuses and statuses["failed"] == 1 and statuses["skipped"] == 1
    seg = sorted(f.scores[1].corr for f in inputs.features)
    assert info["scores"]["median_segment_corr"] == pytest.approx((seg[5] + seg[6]) / 2)
    assert info["scores"]["scorers"] == ["embedding:all-MiniLM-L6-v2", "offline-proxy:entropy", "openai:gpt-test"]
    assert info["model"]["fingerprint"] == FINGERPRINT and set(info["files"]) == {"features.sqlite", "encoders.safetensors"}
    json.dumps(info)  # JSON-ready


def test_feature_ids_filters(db: NeuronDB, built: tuple[Path, DBInputs]) -> None:
    inputs = built[1]
    assert db.feature_ids(layer=7) == [f.rec.feature_id for f in inputs.features if f.rec.layer == 7]
    sexual = [f.rec.feature_id for f in sorted(inputs.features, key=lambda f: (f.rec.layer, f.rec.latent))
              if "sexual" in f.rec.domains]
    assert db.feature_ids(domain="sexual") == sexual and len(sexual) == 4
    assert db.feature_ids(domain="SEXUAL") == sexual
    assert db.feature_ids(domain="sexual", layer=3) == [i for i in sexual if i.startswith("3_")]
    assert db.feature_ids(layer=99) == [] and db.feature_ids(domain="nothing") == []


def test_unknown_feature_lists_near_ids(db: NeuronDB) -> None:
    with pytest.raises(FeatureNotFoundError) as err:
        db.get("3_6")
    assert "near ids: 3_5" in str(err.value)
    with pytest.raises(FeatureNotFoundError, match="<layer>_<latent>"):
        db.get("adult")
    assert db.get(" 3_5 ").id == "3_5"


def test_encoder_and_unknown_layer(db: NeuronDB, built: tuple[Path, DBInputs]) -> None:
    enc = db.encoder(7)
    assert enc["W_enc"].shape == (6, 16) and enc["latents"].tolist() == [int(i.split("_")[1]) for i in db.feature_ids(layer=7)]
    assert torch.equal(enc["b_dec"], built[1].encoders[7]["b_dec"])
    with pytest.raises(LayerNotFoundError, match="layers here: \\[3, 7\\]"):
        db.encoder(5)


# ---------------------------------------------------------------- search
def test_search_ranking(db: NeuronDB) -> None:
    hits = db.search("adult websites")
    assert hits[0].id == "3_5" and hits[0].explanation.startswith("Links to adult websites")
    assert all("adult" in (h.explanation or "").lower() + h.concepts for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert db.search("7_42")[0].id == "7_42"
    assert {h.id for h in db.search("phishing bank")} == set(db.feature_ids(domain="fraud"))
    assert db.search("website")[0].id == "3_5"  # stemming
    assert {h.id for h in db.search("phish*")} >= set(db.feature_ids(domain="fraud"))
    assert db.search("zebra") == []


def test_search_limit_and_filters(db: NeuronDB) -> None:
    assert len(db.search("and", limit=2)) == 2
    assert all(h.layer == 7 for h in db.search("and", layer=7)) and db.search("and", layer=7)
    hits = db.search("adult", domain="drugs")
    assert hits and all(h.domain == "drugs" for h in hits)
    with pytest.raises(ValueError, match="limit"):
        db.search("adult", limit=0)


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_a_value_error(db: NeuronDB, query: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        db.search(query)


@pytest.mark.parametrize(
    "query",
    ['"', "AND", "*", "(", ")", "NEAR(", "a OR", '"unterminated', "fid:3", "^adult", "-adult", "+", "NOT adult",
     "AND OR NOT", "\x00", "😀", "'; DROP TABLE features; --", 'a"b', "***", "{fid explanation}: adult", "adult*)",
     "NEAR(adult websites, 2)", "adult AND (", "\\", "%_"],
)
def test_hostile_queries_never_crash(db: NeuronDB, query: str) -> None:
    assert isinstance(db.search(query), list)


def test_quoted_and_bracketed_words_still_match(db: NeuronDB) -> None:
    fraud = set(db.feature_ids(domain="fraud"))
    for query in ['"phishing"', "(phishing)", "phishing)", "phishing*", "PHISHING!"]:
        assert fraud <= {h.id for h in db.search(query)}, query


def test_search_fuzz(db: NeuronDB) -> None:
    rng = random.Random(0)
    alphabet = 'ab "*()^:-+{}NEARANDORNOT_,.\\\'é😀\x00'
    for _ in range(300):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if q.strip():
            assert isinstance(db.search(q), list), q


# ---------------------------------------------------------------- many readers
def _reader(path: str, barrier, queue) -> None:  # runs in a child process
    try:
        barrier.wait(timeout=30)
        out = []
        with NeuronDB.open(path) as db:
            for _ in range(20):
                out.append([h.id for h in db.search("adult websites")])
                out.append(db.get("7_42").to_dict()["explanation"])
        queue.put(("ok", out))
    except BaseException as exc:  # report, don't hang the parent
        queue.put(("error", repr(exc)))


def test_concurrent_readers_in_several_processes(built: tuple[Path, DBInputs]) -> None:
    path = built[0]
    listing = sorted(os.listdir(path))
    mtimes = {n: (path / n).stat().st_mtime_ns for n in listing}
    ctx = mp.get_context("fork")
    n = 4
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(str(path), barrier, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
    with NeuronDB.open(path) as db:
        expected = [h.id for h in db.search("adult websites")]
        expl = db.get("7_42").explanation
    for status, out in results:
        assert status == "ok", out
        assert out == [expected, expl] * 20
    assert all(p.exitcode == 0 for p in procs)
    # readers wrote nothing: no journal/-wal/-shm files, no modified files
    assert sorted(os.listdir(path)) == listing
    assert {n: (path / n).stat().st_mtime_ns for n in listing} == mtimes


def test_opens_from_read_only_files(copy: Path) -> None:
    for p in copy.iterdir():
        p.chmod(0o444)
    copy.chmod(0o555)
    try:
        with NeuronDB.open(copy) as db:
            assert db.search("phishing") and db.encoder(3)["latents"].numel() == 6
        assert sorted(p.name for p in copy.iterdir()) == ["encoders.safetensors", "features.sqlite", "manifest.json"]
    finally:
        copy.chmod(0o755)


def test_one_connection_from_threads(db: NeuronDB) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: db.search("adult")[0].id, range(40)))
    assert set(results) == {db.search("adult")[0].id}
