"""The admin journal: order, appends from two processes at once, replay from the last reload,
garbled lines skipped; and the bus that applies it, here with a recording target."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from app.admin_bus import ADD, ENABLE_KEY, RELOAD, REMOVE, AdminBus, AdminOp, Journal
from app.admin_journal import record_restart
from app.errors import Conflict

ROOT = Path(__file__).resolve().parent.parent.parent


class Recorder:
    """A target whose state is a set of names, like a pool, and a log of what it applied."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.applied: list[tuple[str, str | None, bool]] = []

    def prepare(self, op: AdminOp) -> AdminOp:
        if op.kind == ADD and op.name in self.names:
            raise Conflict(f"{op.name} exists")
        return replace(op, config="file text") if op.kind == RELOAD else op

    def apply(self, op: AdminOp, own: bool) -> object:
        self.applied.append((op.kind, op.name, own))
        if op.kind == ADD:
            self.names.add(op.name or "")
        elif op.kind == REMOVE:
            self.names.discard(op.name or "")
        elif op.kind == RELOAD:
            self.names = set()
        return sorted(self.names)


def bus(path: Path) -> tuple[AdminBus, Recorder]:
    target = Recorder()
    return AdminBus(target, Journal(path)), target


def test_ops_round_trip_and_keys_stay_out_of_reprs_and_descriptions():
    op = AdminOp(ADD, name="w", worker={"name": "w", "api_keys": ["sk-secret-123456"]})
    assert AdminOp.from_line(op.to_line()) == op
    assert "sk-secret" not in repr(op) and "sk-secret" not in op.describe()
    assert AdminOp.from_line(AdminOp(ENABLE_KEY, name="w", key=2).to_line()).key == 2
    for bad in (b"[]", b'{"op": "explode"}', b'{"op": "add", "key": "1"}', b'{"op": "add", "key": true}', b"{"):
        with pytest.raises(ValueError):
            AdminOp.from_line(bad)


def test_every_process_applies_every_op_in_journal_order(tmp_path):
    path = tmp_path / "admin.journal"
    one, seen_by_one = bus(path)
    two, seen_by_two = bus(path)
    one.submit(AdminOp(ADD, name="a"))
    two.submit(AdminOp(ADD, name="b"))  # catches up with "a" first, under the lock
    one.submit(AdminOp(REMOVE, name="a"))
    two.sync()
    one.sync()
    expected = [(ADD, "a"), (ADD, "b"), (REMOVE, "a")]
    assert [(k, n) for k, n, _ in seen_by_one.applied] == expected
    assert [(k, n) for k, n, _ in seen_by_two.applied] == expected
    assert [own for *_, own in seen_by_one.applied] == [True, False, True]
    assert seen_by_one.names == seen_by_two.names == {"b"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_validation_sees_the_other_processes_ops_first(tmp_path):
    path = tmp_path / "admin.journal"
    one, _ = bus(path)
    two, seen_by_two = bus(path)
    one.submit(AdminOp(ADD, name="same"))
    with pytest.raises(Conflict):
        two.submit(AdminOp(ADD, name="same"))
    assert len(Journal(path).read(0)[0]) == 1 and seen_by_two.names == {"same"}


def test_sync_with_nothing_new_applies_nothing_and_a_missing_journal_is_empty(tmp_path):
    idle, seen = bus(tmp_path / "admin.journal")
    idle.sync()
    idle.sync()
    assert seen.applied == []
    writer, _ = bus(tmp_path / "admin.journal")
    writer.submit(AdminOp(ADD, name="x"))
    idle.sync()
    idle.sync()
    assert seen.applied == [(ADD, "x", False)]


def test_a_process_started_later_replays_from_the_last_reload(tmp_path):
    path = tmp_path / "admin.journal"
    first, _ = bus(path)
    for op in (AdminOp(ADD, name="gone"), AdminOp(RELOAD), AdminOp(ADD, name="kept"), AdminOp(ENABLE_KEY, "kept", 1)):
        first.submit(op)
    late, seen = bus(path)
    late.sync()
    assert [(k, n) for k, n, _ in seen.applied] == [(RELOAD, None), (ADD, "kept"), (ENABLE_KEY, "kept")]
    assert seen.names == {"kept"}
    ops, _ = Journal(path).read(0)
    assert ops[1].config == "file text"  # the text every process reloads from


def test_a_torn_or_garbled_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "admin.journal"
    writer, _ = bus(path)
    writer.submit(AdminOp(ADD, name="a"))
    with open(path, "ab") as handle:  # a writer killed mid-line, then garbage on a line of its own
        handle.write(b'{"op":"add","name":"tor')
    writer.submit(AdminOp(ADD, name="b"))  # starts on a fresh line
    with open(path, "ab") as handle:
        handle.write(b"\xff\xfe not json\n")
    writer.submit(AdminOp(ADD, name="c"))
    reader, seen = bus(path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cortex.admin"):
        reader.sync()
    assert [n for _, n, _ in seen.applied] == ["a", "b", "c"]
    warnings = [r.getMessage() for r in caplog.records if "garbled" in r.getMessage()]
    assert len(warnings) == 2


def test_a_partial_last_line_waits_until_it_is_whole(tmp_path):
    path = tmp_path / "admin.journal"
    line = AdminOp(ADD, name="slow").to_line()
    path.write_bytes(line[:10])
    reader, seen = bus(path)
    reader.sync()
    assert seen.applied == []
    with open(path, "ab") as handle:
        handle.write(line[10:])
    reader.sync()
    assert seen.applied == [(ADD, "slow", False)]


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.admin_journal import AdminOp, Journal  # what gunicorn's master may import
    journal, tag = Journal(Path(sys.argv[1])), sys.argv[2]
    (journal.path.parent / f"ready-{tag}").touch()
    while not (journal.path.parent / "go").exists():
        time.sleep(0.001)
    for i in range(200):
        with journal.locked() as fd:
            journal.append(fd, AdminOp("add", name=f"{tag}-{i}", worker={"pad": "x" * 3000}))
    """
)


def test_concurrent_appends_from_two_processes_interleave_whole_lines(tmp_path):
    path = tmp_path / "admin.journal"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], cwd=ROOT) for tag in ("p1", "p2")]
    while not all((tmp_path / f"ready-{tag}").exists() for tag in ("p1", "p2")):
        assert all(w.poll() is None for w in writers)
        time.sleep(0.005)
    (tmp_path / "go").touch()  # both start appending at once
    for writer in writers:
        assert writer.wait(timeout=30) == 0
    ops, end = Journal(path).read(0)
    assert end == path.stat().st_size
    assert len(ops) == 400
    for tag in ("p1", "p2"):
        assert [op.name for op in ops if (op.name or "").startswith(tag)] == [f"{tag}-{i}" for i in range(200)]
    switches = sum(1 for a, b in zip(ops, ops[1:], strict=False) if a.name[:2] != b.name[:2])  # type: ignore[index]
    assert switches >= 1  # the two writers really did overlap


def test_a_graceful_restart_is_journalled_as_a_reload_of_the_file_as_it_is(tmp_path):
    """gunicorn's SIGHUP (on_reload in the master): new processes replay from there, not the older changes."""
    path = tmp_path / "admin.journal"
    first, _ = bus(path)
    first.submit(AdminOp(ADD, name="runtime"))
    config = tmp_path / "cortex.toml"
    config.write_text('[[workers]]\nname = "w"\nprovider = "demo"\n')
    record_restart({"CORTEX_STATE_DIR": str(tmp_path), "CORTEX_CONFIG": str(config)})
    record_restart({})  # no state directory: nothing to do
    late, seen = bus(path)
    late.sync()
    assert seen.applied == [(RELOAD, None, False)]
    ops, _ = Journal(path).read(0)
    assert ops[-1].config == config.read_text()
    first.sync()
    assert first.target.names == set()  # type: ignore[attr-defined]  # the old process follows too
