"""Items wider than 64 bits (issue 12): arbitrary bytes round-trip through the codec, the trie,
the wire and the result document; the oracles stay ε-LDP and unbiased on prefixes longer than
64 bits; wide runs end with the levels their items need."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhh.core import codes as cd
from fedhh.core.items import StringCodec, display
from fedhh.core.trie import PrefixTrie
from fedhh.datasets import synthetic_urls
from fedhh.errors import CodecError
from fedhh.mechanisms import MechanismParams
from fedhh.mechanisms.local import estimate_level
from fedhh.mechanisms.tasks import LevelCost, SearchResult
from fedhh.oracles import GRR, OLH, OUE, FrequencyOracle, OLHPool, Reports
from fedhh.protocol import Reply, RunResult
from fedhh.protocol.encoding import decode_reply, encode
from fedhh.run.engine import simulate
from fedhh.run.result import format_table, result_document

NO_ZERO = st.binary(min_size=0, max_size=64).map(lambda b: b.replace(b"\0", b""))
ITEMS = st.lists(NO_ZERO, min_size=1, max_size=20)


@given(ITEMS, st.data())
@settings(max_examples=150, deadline=None)
def test_arbitrary_bytes_round_trip(items: list[bytes], data: st.DataObject) -> None:
    """codec → trie (fingerprint labels) → wire → result document (JSON), nothing lost."""
    width = data.draw(st.integers(max(1, max(map(len, items))), 64))
    codec = StringCodec(width)
    m = codec.m
    codes = codec.encode(items)
    assert codec.item_bytes(codes) == items
    assert codec.decode(codes) == [display(b) for b in items]
    # the trie holds one word a node; the search keeps the full prefixes beside the node ids
    uniq = cd.unique(codes)
    for length in sorted({1, 17, 64, 65, m}):
        if length > m:
            continue
        pre = cd.unique(cd.prefix(uniq, m, length))
        trie = PrefixTrie()
        ids = trie.add_nodes(cd.oracle_keys(pre, length), -1, length)
        found = trie.find(cd.oracle_keys(cd.prefix(codes, m, length), length), length)
        assert (found >= 0).all()
        back = pre[np.searchsorted(ids, found)]
        assert cd.to_ints(back) == cd.to_ints(cd.prefix(codes, m, length))
    # the wire: a search reply carries the items as ⌈m/8⌉ bytes each
    n = cd.count(codes)
    cost = LevelCost(m, 8, n, n, "grr", n, n)
    res = SearchResult(codes, np.ones(n), np.ones(n), (cost,), m)
    back = decode_reply(encode(Reply("r", 1, "p", res))).result
    assert isinstance(back, SearchResult) and codec.item_bytes(back.items) == items
    # the result document (JSON): the exact bytes beside the display form
    result = RunResult("r", "tap", codes, np.ones(n), np.zeros(n), np.ones(n, np.int64), {})
    doc = json.loads(json.dumps(result_document(result, codec)))
    assert [bytes.fromhex(row["bytes_hex"]) for row in doc["top_k"]] == items
    assert [row["item"] for row in doc["top_k"]] == [display(b) for b in items]
    if m > 64:
        hexes = [cd.to_bytes(codes[i : i + 1], m).hex() for i in range(n)]
        assert [row["code"] for row in doc["top_k"]] == ["0x" + h for h in hexes]


def test_zero_bytes_and_long_items_are_refused() -> None:
    with pytest.raises(CodecError, match=r"1 item.* hold a zero byte"):
        StringCodec(8).encode([b"ok", b"a\0b"])
    with pytest.raises(CodecError, match=r"2 item.* longer than 4 bytes, e.g. 'abcde' .5 bytes."):
        StringCodec(4).encode(["abcde", "ok", "abcdef"])
    cut = StringCodec(4, truncate=True).encode_counted(["abcde", "ok", "אבג"])
    assert cut.cut.tolist() == [True, False, True]
    assert StringCodec(4).decode(cut.codes) == ["abcd", "ok", "אב"]  # never half a letter


def test_table_shows_non_utf8_items_escaped() -> None:
    codec = StringCodec(40)
    codes = codec.encode([b"www.b\xc3", "https://example.org/a-long-path/x"])
    result = RunResult("r", "tap", codes, np.ones(2), np.zeros(2), np.ones(2, np.int64), {})
    doc = result_document(result, codec)
    doc.update(params={"epsilon": 1, "k": 2, "m": 320, "oracle": "auto"}, notes=[])
    doc["cost"] = {
        "rounds": 1,
        "bytes_to_parties": 0,
        "bytes_to_coordinator": 0,
        "hash_evaluations": 0,
    }
    doc["privacy"] = {"users_reported": 2, "statement": ""}
    table = format_table(doc, {row["code"]: 1 for row in doc["top_k"]})
    assert "b'www.b\\xc3'" in table and "'https://example.org/a-long-path/x'" in table


# --- the oracles on prefixes longer than 64 bits ------------------------------------------------

ORACLE = {"grr": GRR(2.0), "oue": OUE(2.0), "olh": OLH(2.0)}
WIDE = cd.from_ints([(0xD7 << 192) + i * 0x1F3B + (i << 130) for i in range(8)], 200)
KEYS = cd.fingerprint(WIDE, 200)


def _worst_ratio(o: FrequencyOracle, space: Reports, cand: np.ndarray | None) -> float:
    probs = o.output_probability(space, KEYS, cand)  # every key: 5 in C, 3 outside (⊥)
    return float((probs.max(axis=0) / probs.min(axis=0)).max())


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_grr_and_oue_stay_epsilon_ldp_on_wide_prefixes(eps: float) -> None:
    cand, d = KEYS[:5], 6
    symbols = Reports("grr", d, {"symbol": np.arange(d, dtype=np.uint32)})
    assert _worst_ratio(GRR(eps), symbols, cand) <= math.exp(eps) * (1 + 1e-12)
    outputs = np.array(list(itertools.product([0, 1], repeat=d)), dtype=np.uint8)
    bits = Reports("oue", d, {"bits": np.packbits(outputs, axis=1)})
    assert _worst_ratio(OUE(eps), bits, cand) <= math.exp(eps) * (1 + 1e-12)


@pytest.mark.parametrize("eps", [0.5, 3.0])
def test_olh_stays_epsilon_ldp_on_wide_prefixes(eps: float) -> None:
    o = OLH(eps)
    seeds = np.random.default_rng(3).integers(0, 2**64, size=300, dtype=np.uint64)
    arrays = {
        "seed": np.repeat(seeds, o.g),
        "bucket": np.tile(np.arange(o.g, dtype=np.uint32), 300),
    }
    assert _worst_ratio(o, Reports("olh", o.g, arrays), None) <= math.exp(eps) * (1 + 1e-12)


@pytest.mark.parametrize("name", ["grr", "oue", "olh", "olh-pool"])
def test_estimates_on_wide_prefixes_are_unbiased(name: str) -> None:
    """The mechanisms' own level (prefix, fingerprint, perturb, estimate): every candidate's mean
    error over 20 runs within 5 sigma of 0, and the MSE near the variance formula."""
    rng = np.random.default_rng(0)
    k, n, reps = 256, 20_000, 20
    cand = cd.unique(cd.from_ints([int(v) << 60 for v in rng.integers(1, 2**62, k)], 200))
    k = cd.count(cand)
    pmf = np.arange(1, k + 1) ** -1.1
    values = np.concatenate(
        [cand[rng.choice(k, size=n - 2000, p=pmf / pmf.sum())], cd.from_ints([3] * 2000, 200)]
    )  # 10% outside C (⊥)
    items = cd.shift_left(values, 200, 56)  # 256-bit items whose 200-bit prefixes are values
    truth = np.array([np.sum(cd.isin(values, cand[i : i + 1])) for i in range(k)], float)
    users = np.arange(n)
    errors = np.empty((reps, k))
    for r in range(reps):  # a fresh public seed pool every run, as in the runs themselves
        oracle = OLHPool(2.0, pool_size=512, pool_seed=r) if name == "olh-pool" else ORACLE[name]
        res = estimate_level(items, users, 256, 200, cand, oracle, np.random.default_rng(r), n)
        errors[r] = res.estimates - truth
    if isinstance(oracle, OLHPool):  # users sharing a seed and a value: the collision term
        held = np.concatenate([truth, [2000.0]])
        mass = float(np.sum(held * (held - 1))) - truth * (truth - 1)
        var = np.array([oracle.variance(n, k + 1, c, w) for c, w in zip(truth, mass, strict=True)])
    else:
        var = np.array([oracle.variance(n, k + 1, c) for c in truth])
    z = errors.mean(axis=0) / np.sqrt(var / reps)
    assert np.abs(z).max() < 5.0
    assert abs(np.mean(errors**2) / var.mean() - 1.0) < 0.15  # 256 candidates × 20 runs: ≈ 6%


# --- runs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def urls():
    return synthetic_urls(150_000, 4, n_items=2_000, s=1.2, alpha=1.0, seed=4)


@pytest.mark.parametrize("mechanism", ["tap", "taps"])
def test_url_federation_is_found_whole(urls, mechanism: str) -> None:
    params = MechanismParams(mechanism=mechanism, epsilon=8.0, k=8, m=256, seed=1)
    res = simulate(urls.parties, urls.codec, params)
    assert urls.evaluate(res.items, res.estimates, 8).f1 >= 0.85
    assert all(20 <= len(b) <= 32 for b in urls.codec.item_bytes(res.items))


def test_wide_width_costs_the_levels_the_items_need() -> None:
    """The same short text items at 6 and 32 bytes: the 256-bit run needs about the levels of
    the 48-bit one (ended prefixes have one child, and the search jumps to m once every kept
    prefix has ended), not four times as many."""
    base = synthetic_urls(60_000, 3, n_items=300, s=1.2, seed=2)
    short = [b[8:14] for b in base.codec.item_bytes(base.global_codes)]  # 6 bytes each
    levels = {}
    for width in (6, 32):
        codec = StringCodec(width)
        table = codec.encode(short)
        parties = [table[cd.index_of(p, base.global_codes)] for p in base.parties]
        params = MechanismParams(mechanism="tap", epsilon=8.0, k=8, m=codec.m, seed=0)
        res = simulate(parties, codec, params)
        lv = [x for x in res.cost["levels"] if x["length"] > 0]
        per_party = [sum(1 for x in lv if x["party"] == p) for p in {x["party"] for x in lv}]
        levels[width] = max(per_party)
        assert urls_f1(parties, codec, res) >= 0.85
    assert levels[32] <= levels[6] + 2, levels


def urls_f1(parties: list[np.ndarray], codec: StringCodec, res: RunResult) -> float:
    from fedhh.datasets import FederatedDataset

    ds = FederatedDataset("short", codec.m, parties, codec)
    return ds.evaluate(res.items, res.estimates, 8).f1


def test_a_wide_level_drops_open_prefixes_that_cannot_reach_the_top_k() -> None:
    """Once k complete items are kept, an open prefix whose ĉ + 2·SE is below the k-th
    ĉ − 2·SE of them cannot hold a top-k item (its subtree counts at most ĉ) and is dropped;
    with fewer than k complete items every open prefix stays a candidate."""
    from fedhh.mechanisms.local import _wide_top

    # 16-bit prefixes of text: 'a\0' and 'b\0' have ended, 'cd' and 'ef' are open
    cand = np.array([0x6100, 0x6200, 0x6364, 0x6566], dtype=np.uint64)
    est = np.array([1000.0, 900.0, 950.0, 500.0])
    se = np.full(4, 50.0)  # k-th (2nd) complete lower bound: 900 − 100 = 800
    passing = np.ones(4, dtype=bool)
    top = _wide_top(est, se, cand, 16, passing, kappa=4, k=2, horizon=None)
    assert [int(cand[i]) for i in top] == [0x6100, 0x6364, 0x6200]  # 500 + 100 < 800: dropped
    top3 = _wide_top(est, se, cand, 16, passing, kappa=4, k=3, horizon=None)
    assert sorted(int(cand[i]) for i in top3) == sorted(int(c) for c in cand)
