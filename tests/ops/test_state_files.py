"""State files cannot be damaged silently (issue 24 item 1): a coordinator or a party agent
refuses, with one line and exit status 2, a state file that is empty, not SQLite, damaged, of the
other kind or (an agent's) of another party, and leaves the file as it was; a new path gets a
new file bound to its owner. The services are started as processes, as operators start them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import faults
import pytest

from fedhh.clients.store import AgentStore
from fedhh.errors import ParameterError
from fedhh.server.store import Store
from fedhh.wire.tokens import add_token

FEDHH = [sys.executable, "-m", "fedhh.cli"]


def _coordinator(tmp_path: Path, db: Path) -> subprocess.CompletedProcess[str]:
    tokens = tmp_path / "tokens.json"
    if not tokens.exists():
        add_token(tokens, "analyst", "alice", tmp_path / "alice.token")
    argv = ["coordinator", "serve", "--listen", "127.0.0.1:0", "--insecure"]
    argv += ["--db", str(db), "--tokens", str(tokens)]
    return subprocess.run([*FEDHH, *argv], capture_output=True, text=True, timeout=60)


def _agent(tmp_path: Path, db: Path, party: str = "party-0") -> subprocess.CompletedProcess[str]:
    data = tmp_path / "items.txt"
    data.write_text("a\nb\n")
    token = tmp_path / "p.token"
    token.write_text("not-checked-before-the-state-file\n")
    argv = ["party", "serve", "--party-id", party, "--coordinator", "127.0.0.1:9", "--insecure"]
    argv += ["--token-file", str(token), "--db", str(db), "--data", str(data), "--item-bytes", "1"]
    return subprocess.run([*FEDHH, *argv], capture_output=True, text=True, timeout=60)


def _refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("fedhh: error:") and message in lines[0], lines


@pytest.fixture
def coordinator_db(tmp_path: Path) -> Path:
    path = tmp_path / "coordinator.sqlite"
    store = Store(path)
    for i in range(300):  # a few pages of rows
        store.register_party(f"party-{i}", 1000 + i, "int:32", "data", {"budget": 40.0})
    store.close()
    return path


def test_an_empty_or_foreign_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    faults.emptied(empty)
    _refused(_coordinator(tmp_path, empty), "is empty, not a fedhh coordinator state file")
    _refused(_agent(tmp_path, empty), "is empty, not a fedhh party agent state file")
    assert empty.stat().st_size == 0
    text = tmp_path / "notes.txt"
    text.write_text("not a database, but some operator's notes\n" * 100)
    _refused(_coordinator(tmp_path, text), "file is not a database")
    assert text.read_text().startswith("not a database")


@pytest.mark.parametrize("damage", sorted(faults.DAMAGE))
def test_a_damaged_file_is_refused_and_left_alone(
    tmp_path: Path, coordinator_db: Path, damage: str
) -> None:
    agent_db = tmp_path / "party-0.sqlite"
    store = AgentStore.of_party(agent_db, "party-0")
    store.add_reports([("run-1", f"user-{i}", 1, bytes(40)) for i in range(2000)])  # pages of rows
    store.close()
    for db, start in ((coordinator_db, _coordinator), (agent_db, _agent)):
        faults.DAMAGE[damage](db)
        before = db.read_bytes()
        proc = start(tmp_path, db)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("fedhh: error:") and "damaged" in proc.stderr, proc.stderr
        assert db.read_bytes() == before


def test_the_other_kinds_or_another_partys_file_is_refused(
    tmp_path: Path, coordinator_db: Path
) -> None:
    _refused(_agent(tmp_path, coordinator_db), "is a fedhh coordinator state file")
    agent_db = tmp_path / "party-1.sqlite"
    AgentStore.of_party(agent_db, "party-1").close()
    _refused(_coordinator(tmp_path, agent_db), "is a fedhh party agent state file")
    _refused(_agent(tmp_path, agent_db, "party-0"), "is the state file of party party-1")
    with pytest.raises(ParameterError, match="state file of party party-1"):
        AgentStore.of_party(agent_db, "party-0")
    AgentStore.of_party(agent_db, "party-1").close()  # its own party opens it


def test_processes_opening_a_new_path_at_once_all_find_one_whole_file(tmp_path: Path) -> None:
    """A new state file appears whole (built aside, linked into place): processes that open the
    same new path at the same moment all open it, none sees it empty or half made and refuses."""
    db = tmp_path / "c.sqlite"
    code = (
        "import sys; from pathlib import Path; from fedhh.server.store import Store; "
        "Store(Path(sys.argv[1])).close()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    assert sorted(f.name for f in tmp_path.iterdir() if not f.name.startswith("c.sqlite")) == []
    Store(db).close()  # and it is a coordinator's file
    with pytest.raises(ParameterError, match="coordinator state file, not the party agent's"):
        AgentStore(db)
