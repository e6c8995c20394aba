"""The local transfer service: Rucio's register/replicate/rule-state model on directories."""

from drp_campaign.checksums import adler32
from drp_campaign.transfer.base import Manifest, ManifestEntry
from drp_campaign.transfer.local import LocalTransferService


def make_manifest(tmp_path, n=3):
    src = tmp_path / "source-repo"
    entries = []
    for i in range(n):
        f = src / "run" / f"file{i}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"payload {i}" * (i + 1))
        entries.append(ManifestEntry(f"id-{i}", "isolated_star", "run", f"run/file{i}.json", f.stat().st_size, adler32(f), str(f)))
    return Manifest(str(src), entries)


def test_replicate_copies_every_file_and_verifies_it(tmp_path):
    service = LocalTransferService(tmp_path / "work")
    manifest = make_manifest(tmp_path)
    assert service.register("test:r1/hop/FRDF", "FRDF_DISK", manifest) == 3
    rule = service.replicate("test:r1/hop/FRDF", "USDF_DISK")
    status = service.rule_status(rule)
    assert (status.state, status.files_ok, status.files_total) == ("OK", 3, 3)
    for e in manifest.entries:
        copy = service.replica_dir("USDF_DISK") / e.relpath
        assert adler32(copy) == e.adler32


def test_every_call_is_idempotent(tmp_path):
    service = LocalTransferService(tmp_path / "work")
    manifest = make_manifest(tmp_path)
    service.register("test:r1/hop/FRDF", "FRDF_DISK", manifest)
    assert service.register("test:r1/hop/FRDF", "FRDF_DISK", manifest) == 0
    assert len(service.manifest("test:r1/hop/FRDF").entries) == 3
    assert service.replicate("test:r1/hop/FRDF", "USDF_DISK") == service.replicate("test:r1/hop/FRDF", "USDF_DISK")


def test_a_corrupted_source_leaves_the_rule_stuck_naming_the_file(tmp_path):
    service = LocalTransferService(tmp_path / "work")
    manifest = make_manifest(tmp_path)
    service.register("test:r1/hop/FRDF", "FRDF_DISK", manifest)
    (tmp_path / "source-repo" / "run" / "file1.json").write_text("corrupted!")
    status = service.rule_status(service.replicate("test:r1/hop/FRDF", "USDF_DISK"))
    assert status.state == "STUCK" and status.files_ok == 2
    assert len(status.errors) == 1 and status.errors[0].startswith("run/file1.json: checksum mismatch")


def test_a_hold_at_the_source_copies_nothing_and_release_drops_only_that_rule(tmp_path):
    service = LocalTransferService(tmp_path / "work")
    manifest = make_manifest(tmp_path)
    did = "test:r1/hop/FRDF"
    service.register(did, "FRDF_DISK", manifest)
    hold = service.replicate(did, "FRDF_DISK", lifetime_s=86400)
    assert service.rule_status(hold).state == "OK"
    assert not service.replica_dir("FRDF_DISK").exists(), "a hold must not copy the source's files"
    assert service.replicas_at(did, "FRDF_DISK") == {e.relpath: e.bytes for e in manifest.entries}
    assert service.replicas_at(did, "USDF_DISK") == {}
    rule = service.replicate(did, "USDF_DISK")
    assert set(service.replicas_at(did, "USDF_DISK")) == {e.relpath for e in manifest.entries}
    assert service.release(did, "FRDF_DISK") == [hold]
    assert service.release(did, "FRDF_DISK") == [], "a second release finds nothing to drop"
    assert service.rule_status(rule).state == "OK", "the hub's copy is untouched"
