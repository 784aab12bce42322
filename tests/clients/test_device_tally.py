"""A device party folds its users' reports into the task's tally as they arrive (issue 26 item
1): the tally is written with the last stored report it covers, the close of a level folds
about a block, and the tally gives exactly the estimates of all the reports decoded at once,
for every oracle, also across a failed fold and a restarted agent."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from grpc_harness import wait_until

from fedhh.clients import devices
from fedhh.clients.credentials import Credentials, new_key
from fedhh.clients.devices import DeviceSource
from fedhh.clients.ingest import ReportChecker
from fedhh.clients.store import AgentStore
from fedhh.core import codes as cd
from fedhh.errors import StorageError
from fedhh.mechanisms.local import estimate_reports
from fedhh.oracles import Reports, make_oracle
from fedhh.protocol.party import Group

USERS, LENGTH, BLOCK = 1500, 16, 64
ORACLES = {
    "grr": {},
    "oue": {},
    "olh": {},
    "olh-pool": {"pool_size": 64},
}


def _source(path: Path, fold_every: int | None = BLOCK) -> DeviceSource:
    store = AgentStore.of_party(path, "party-0")
    creds = Credentials("party-0", new_key(), USERS)
    return DeviceSource(creds, "int:16", store, 600.0, fold_every=fold_every)


def _group(name: str) -> Group:
    oracle = make_oracle(name, 2.0, **ORACLES[name])
    candidates = np.arange(0, 4000, 97, dtype=np.uint64)  # 42 candidates
    request = SimpleNamespace(run_id="r", request_id=3)
    return Group(request, np.arange(USERS), LENGTH, candidates, oracle)  # type: ignore[arg-type]


def _reports(group: Group, seed: int) -> list[bytes]:
    """One canonical report per user, as devices make them."""
    rng = np.random.default_rng(seed)
    values = group.candidates[rng.integers(0, group.candidates.size, USERS)]
    keys = cd.oracle_keys(cd.as_codes(values, LENGTH), LENGTH)
    batch = group.oracle.perturb(keys, rng, cd.oracle_keys(group.candidates, LENGTH))
    return [batch.take([i]).to_bytes() for i in range(USERS)]


def _batch(blobs: list[bytes]) -> Reports:
    parts = [Reports.from_bytes(b) for b in blobs]
    batch = parts[0]
    for p in parts[1:]:
        batch = batch.concat(p)
    return batch


def _all_at_once(group: Group, blobs: list[bytes]) -> tuple[int, np.ndarray, int]:
    t = group.oracle.tally(_batch(blobs), cd.oracle_keys(group.candidates, LENGTH))
    return t.n, t.state, t.nbytes


def _submit(source: DeviceSource, blobs: list[bytes], users: range) -> None:
    for start in range(users.start, users.stop, 50):
        chunk = [(u, blobs[u]) for u in range(start, min(start + 50, users.stop))]
        refused, _ = source.submit(chunk, "r", 3)
        assert refused == []


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_reports_folded_as_they_come_tally_as_all_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(devices, "FOLD_ROWS", BLOCK)
    source, group = _source(tmp_path / "a.sqlite"), _group(name)
    rng = np.random.default_rng(0)
    try:
        assert source.reports(group, rng) is None  # the task opens
        blobs = _reports(group, seed=1)
        _submit(source, blobs, range(USERS))
        # folded while collecting: at most a block (and a batch in flight) is left unfolded
        wait_until(lambda: len(source.store.unfolded_reports("r", 3, USERS)[0]) < BLOCK + 50)
        tally = source.reports(group, rng)  # the quota is reached: the task closes
        assert tally is not None
        n, counts, nbytes = _all_at_once(group, blobs)
        assert (tally.n, tally.nbytes) == (n, nbytes) and n == USERS
        assert np.array_equal(tally.state, counts)
        folded = estimate_reports(tally, LENGTH, group.candidates, group.oracle, USERS)
        direct = estimate_reports(_batch(blobs), LENGTH, group.candidates, group.oracle, USERS)
        assert np.array_equal(folded.estimates, direct.estimates)
        assert np.array_equal(folded.stderrs, direct.stderrs) and folded.cost == direct.cost
        assert source.store.unfolded_reports("r", 3, USERS) == ([], [])
        assert source.store.count_reports("r", 3) == USERS
    finally:
        source.close()
        source.store.close()


def test_a_failed_fold_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk refuses the third fold while the level closes: the close fails and nothing is
    lost; the agent restarts on the same file and answers the level with the tally of every
    report, each once."""
    monkeypatch.setattr(devices, "FOLD_ROWS", BLOCK)
    path, group = tmp_path / "a.sqlite", _group("olh")
    source = _source(path, fold_every=None)  # the close folds every block
    blobs = _reports(group, seed=2)
    rng = np.random.default_rng(0)
    try:
        assert source.reports(group, rng) is None
        _submit(source, blobs, range(USERS))
        real, calls = source.store.fold, []

        def fails_third(*args: object) -> None:
            calls.append(1)
            if len(calls) == 3:
                raise StorageError("disk I/O error")
            real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(source.store, "fold", fails_third)
        with pytest.raises(StorageError):
            source.reports(group, rng)
        assert len(source.store.unfolded_reports("r", 3, USERS)[0]) == USERS - 2 * BLOCK
    finally:
        source.close()
        source.store.close()
    again = _source(path)  # the agent restarts: the level's request comes again
    try:
        assert again.reports(group, rng) is None  # reopened with its quota already met
        tally = again.reports(group, rng)
        assert tally is not None
        n, counts, nbytes = _all_at_once(group, blobs)
        assert (tally.n, tally.nbytes) == (n, nbytes)
        assert np.array_equal(tally.state, counts)
    finally:
        again.close()
        again.store.close()


def test_stored_reports_parse_at_once_whatever_their_encoding() -> None:
    """A block of stored reports is read in one numpy step when all are canonical, and report
    by report where some came in another valid encoding (here: fields in another order): the
    same batch either way, in the same order."""
    group = _group("olh")
    checker = ReportChecker(group.oracle, cd.oracle_keys(group.candidates, LENGTH))
    blobs = _reports(group, seed=3)[:40]
    canon = checker.parse(blobs)
    other = Reports.from_bytes(blobs[7])
    reordered = Reports(other.kind, other.size, dict(reversed(list(other.arrays.items()))))
    mixed = [*blobs[:7], reordered.to_bytes(), *blobs[8:]]
    assert mixed[7] != blobs[7]
    for batch in (canon, checker.parse(mixed)):
        want = _batch(blobs)
        if batch is not canon:  # the odd one is appended after the canonical ones
            order = [*range(7), *range(8, 40), 7]
            want = want.take(np.array(order))
        assert batch.n == 40 and set(batch.arrays) == set(want.arrays)
        for k in want.arrays:
            assert np.array_equal(batch[k], want[k])
