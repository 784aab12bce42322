"""A synthetic URL federation: long text items (20–32 bytes) with shared prefixes.

Items look like URLs, scheme + host + path made from a built-in word list
(``https://www.garden-news.org/map``): every item is 20 to 32 bytes of ASCII, and many share
their first bytes (the scheme, ``www.``, a popular host), as real URLs do. Users are Zipf(s) over
the distinct URLs in random rank order and are split over the parties by the rules of
:mod:`fedhh.datasets.splits` (Dirichlet, permutation, IID). The codec is ``StringCodec(32)``
(m = 256 bits).

``python -m fedhh.datasets urls DIR`` writes such a federation as party files (one item a line,
``party-0.txt``, ...) for ``fedhh simulate --party-file ... --item-bytes 32``.
"""

from __future__ import annotations

from typing import Unpack

import numpy as np

from fedhh.core import codes as cd
from fedhh.core.items import StringCodec
from fedhh.datasets.common import RngLike, _check_int, make_rng
from fedhh.datasets.container import FederatedDataset
from fedhh.datasets.splits import SplitOptions, SplitRule, _check_s, _split_counts
from fedhh.datasets.synthetic import zipf_pmf
from fedhh.errors import ParameterError

__all__ = ["URL_WIDTH", "synthetic_urls", "url_items"]

URL_WIDTH = 32  # bytes per item (m = 256)
MIN_LENGTH = 20
_WORDS = (
    "able acid aged also area army away baby back ball band bank base bath bear beat bell belt "
    "best bird blow blue boat body bone book boot born boss both bowl bulk burn bush busy cake "
    "call calm came camp card care cart case cash cast cell chat chip city club coal coat code "
    "cold come cook cool cope copy core cost crew crop dark data date dawn days dead deal dear "
    "debt deep deny desk dial diet disk dock does done door dose down draw drew drop drug dual "
    "duke dust duty each earn ease east easy edge else even ever exit face fact fail fair fall "
    "farm fast fate fear feed feel file fill film find fine fire firm fish five flat flow food "
    "foot form fort four free from fuel full fund gain game gate gave gear gift girl give glad "
    "goal goes gold golf gone good gray grew grey grow gulf hair half hall hand hang hard harm "
    "head hear heat held hell help here hero high hill hire hold hole holy home hope host hour "
    "huge hung hunt idea inch into iron item jazz join jump jury just keen keep kept kick kind "
    "king knee knew know lack lady laid lake land lane last late lead left less life lift like "
    "line link list live load loan lock logo long look lord lose loss lost love luck made mail "
    "main make male many mark mass meal mean meat meet menu mere mild mile milk mill mind mine "
    "miss mode mood moon more most move much must name navy near neck need news next nice nine "
    "none nose note okay once only open oral over pace pack page paid pain pair palm park part "
    "pass past path peak pick pink pipe plan play plot plug plus poll pool poor port post pull "
    "pure push race rail rain rank rare rate read real rear rely rent rest rice rich ride ring "
    "rise risk road rock role roll roof room root rose rule rush safe said sake sale salt same "
    "sand save seat seed seek seem seen self sell send sent ship shop shot show shut sick side "
    "sign site size skin slip slow snow soft soil sold sole some song soon sort soul spot star "
    "stay step stop such suit sure take tale talk tall tank tape task team tech tell tend term "
    "test text than that them then they thin this thus tide till time tiny told tone took tool "
    "tour town tree trip true tune turn twin type unit upon used user vast very vice view vote "
    "wage wait wake walk wall want ward warm wash wave ways weak wear week well went were west "
    "what when whom wide wife wild will wind wine wing wire wise wish with wood word wore work "
    "yard yeah year your zero zone"
).split()
_TLDS = (".com", ".org", ".net", ".io", ".de", ".co.uk", ".info", ".app")


def url_items(n_items: int, rng: RngLike = None) -> list[bytes]:
    """``n_items`` distinct URL-like byte strings of 20–32 bytes, in random order."""
    n_items = _check_int("n_items", n_items, 1)
    gen = make_rng(rng)
    words = np.array(_WORDS)
    out: dict[bytes, None] = {}
    tries = 0
    while len(out) < n_items:  # a loop over the distinct items (not the users)
        tries += 1
        if tries > 50 * n_items + 1000:
            raise ParameterError(f"cannot make {n_items} distinct URLs of 20–32 bytes")
        scheme = "https://" if gen.random() < 0.8 else "http://"
        www = "www." if gen.random() < 0.35 else ""
        host = "-".join(gen.choice(words, size=int(gen.integers(1, 3))))
        tld = _TLDS[int(gen.integers(0, len(_TLDS)))]
        path = "/" + "/".join(gen.choice(words, size=int(gen.integers(0, 3))))
        url = f"{scheme}{www}{host}{tld}{path.rstrip('/')}".encode()
        if MIN_LENGTH <= len(url) <= URL_WIDTH:
            out.setdefault(url, None)
    return list(out)


def synthetic_urls(
    n_users: int,
    n_parties: int,
    *,
    n_items: int = 5_000,
    s: float = 1.1,
    rng: RngLike = None,
    seed: int | None = None,
    **split: Unpack[SplitOptions],
) -> FederatedDataset:
    """Zipf(s) users over ``n_items`` random distinct URLs (:func:`url_items`), split non-IID
    over ``n_parties`` parties; items are 256-bit codes (``StringCodec(32)``)."""
    n_users = _check_int("n_users", n_users, 1)
    n_parties = _check_int("n_parties", n_parties, 1)
    s = _check_s(s)
    rule = SplitRule.check(n_parties, **split)
    gen = make_rng(rng, seed)
    codec = StringCodec(URL_WIDTH)
    table = codec.encode(url_items(n_items, gen))
    counts = gen.multinomial(n_users, zipf_pmf(n_items, s)).astype(np.int64)
    nz = np.flatnonzero(counts)
    ranks = np.arange(n_items, dtype=np.uint64)[nz]
    parts = _split_counts(ranks, counts[nz], rule, s, gen)
    parties = [table[p.astype(np.int64)] for p in parts]
    order = np.argsort(cd.keys(table[nz]), kind="stable")
    params = {"n_items": n_items, "s": s, **rule.params()}
    return FederatedDataset(
        name=f"urls(s={s:g})",
        m=codec.m,
        parties=parties,
        codec=codec,
        params=params,
        precomputed=(table[nz][order], counts[nz][order]),
    )
