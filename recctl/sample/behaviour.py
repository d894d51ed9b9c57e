"""Visitors, their sessions and the event stream, with the planted structure (habits: ``habits.py``).

The stream is built slot by slot: a *slot* is one product view, optionally preceded by a search and
followed by an add-to-cart; purchases of a session are checked out together after its last slot.
All steps are vectorised over slots; loops run only over archetypes, pools or positions in a session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recctl.sample.catalog import BRANDS, DAY, LEAVES, BoolArr, Catalog, FloatArr, IntArr, Planted

WINDOW = 100_00  # half-width of a user's price band, cents
NOISE = 0.16  # share of slots drawn from the whole catalogue
P_FOLLOW = 0.8  # P(next view in the session is b | view of a) for planted pairs
GAP = 1800 + 60  # minimum idle time between two sessions of a visitor, seconds
KEY = 10_000_000  # pool-id stride of the (pool, price) search key; prices stay below it
# relative traffic per hour of day (UTC), evening peak
# fmt: off
HOURS = np.array([1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0,
                  3.2, 3.0, 2.9, 2.9, 3.0, 3.3, 3.8, 4.4, 4.8, 4.4, 3.2, 1.9])
# fmt: on
PLAIN, LOYAL, AFFINE = 0, 1, 2  # user kinds
M_BRAND, M_LEAF, M_GENERIC, M_NOISE = 0, 1, 2, 3  # slot modes
N_LEAF = len(LEAVES)
P_ROOT, P_ROOT_SALE, P_LEAF = 1, 4, 7
P_LEAF_SALE, P_BRAND = 7 + N_LEAF, 7 + 2 * N_LEAF
N_POOLS = P_BRAND + 3 * len(BRANDS)


@dataclass
class Users:
    root: IntArr  # 0 women, 1 men, 2 kids: which part of the shop the visitor browses
    centre: IntArr  # preferred price, cents
    kind: IntArr
    brand: IntArr  # loyal brand or -1
    leaf: IntArr  # favourite leaf category or -1
    focus: FloatArr  # probability that a slot follows the brand / leaf preference
    hunter: BoolArr
    new: BoolArr


@dataclass
class Stream:
    """Slot-level arrays (one entry per product view) plus per-session arrays."""

    slot_session: IntArr
    slot_user: IntArr
    pos: IntArr
    t_search: IntArr
    t_view: IntArr
    t_cart: IntArr
    has_search: BoolArr
    item: IntArr
    followed: BoolArr
    cart: BoolArr
    buy: BoolArr
    sess_user: IntArr
    sess_start: IntArr
    sess_checkout: IntArr

    def concat(self, other: Stream) -> Stream:
        """``other``'s sessions after this stream's (slot arrays stay grouped by session)."""
        parts = {f: np.concatenate([v, getattr(other, f)]) for f, v in vars(self).items()}
        parts["slot_session"] = np.concatenate([self.slot_session, other.slot_session + self.sess_user.size])
        return Stream(**parts)


def _diurnal(rng: np.random.Generator, t: IntArr) -> IntArr:
    hour = rng.choice(24, size=t.size, p=HOURS / HOURS.sum())
    return np.asarray((t // DAY) * DAY + hour * 3600 + rng.integers(0, 3600, size=t.size), dtype=np.int64)


def make_users(rng: np.random.Generator, cat: Catalog, n: int) -> Users:
    n_new, n_loyal, n_aff = round(0.15 * n), round(0.20 * n), round(0.30 * n)
    perm = rng.permutation(n)
    new = np.zeros(n, dtype=bool)
    new[perm[:n_new]] = True
    kind = np.zeros(n, dtype=np.int64)
    kind[perm[n_new : n_new + n_loyal]] = LOYAL
    kind[perm[n_new + n_loyal : n_new + n_loyal + n_aff]] = AFFINE
    hunter = np.zeros(n, dtype=bool)
    hunter[rng.choice(perm[n_new:][kind[perm[n_new:]] != LOYAL], size=round(0.15 * n), replace=False)] = True

    root = rng.choice(3, size=n, p=[0.55, 0.35, 0.10]).astype(np.int64)
    tier = np.where(root == 2, rng.choice(2, size=n), rng.choice(3, size=n, p=[0.35, 0.45, 0.20]))
    lo_t, hi_t = np.array([15, 50, 160])[tier], np.array([45, 110, 300])[tier]
    centre = np.round(lo_t + rng.random(n) * (hi_t - lo_t)).astype(np.int64) * 100

    brand = np.full(n, -1, dtype=np.int64)
    for r in range(3):
        who = np.flatnonzero((kind == LOYAL) & (root == r))
        w = np.array([np.sum((cat.brand == b) & (cat.root == r)) for b in range(len(BRANDS))], dtype=float)
        brand[who] = rng.choice(len(BRANDS), size=who.size, p=w / w.sum())
    loyal = brand >= 0
    centre[loyal] = np.array([b.centre_cents for b in BRANDS])[brand[loyal]]

    # favourite leaf: one of the visitor's part of the shop, weighted by its items inside the price band
    counts = np.zeros((n, N_LEAF))
    for i, lf in enumerate(LEAVES):
        prices = np.sort(cat.price[cat.leaf == i])
        inside = np.searchsorted(prices, centre + WINDOW, "right") - np.searchsorted(prices, centre - WINDOW)
        counts[:, i] = np.where(root == lf.root, inside + 0.01, 0.0)
    cum = np.cumsum(counts, axis=1)
    draw = rng.random(n) * cum[:, -1]
    leaf = np.where(kind == AFFINE, (cum <= draw[:, None]).sum(axis=1), -1).astype(np.int64)

    focus = np.where(
        kind == LOYAL, rng.uniform(0.74, 0.9, n), np.where(kind == AFFINE, rng.uniform(0.62, 0.8, n), 0)
    )
    return Users(root, centre, kind, brand, leaf, focus, hunter, new)


@dataclass
class Pools:
    """Item pools (a root, a leaf, a brand within a root, their on-sale parts) sorted by price."""

    item: IntArr
    key: IntArr
    cw: FloatArr
    bounds: IntArr
    parent: IntArr

    @classmethod
    def build(cls, cat: Catalog, allowed: BoolArr) -> Pools:
        it = np.flatnonzero(allowed)
        sale = it[cat.on_sale[it]]
        pid = np.concatenate(
            [
                np.zeros(it.size, dtype=np.int64),
                P_ROOT + cat.root[it],
                P_ROOT_SALE + cat.root[sale],
                P_LEAF + cat.leaf[it],
                P_LEAF_SALE + cat.leaf[sale],
                P_BRAND + 3 * cat.brand[it] + cat.root[it],
            ]
        )
        items = np.concatenate([it, it, sale, it, sale, it])
        order = np.lexsort((items, cat.price[items], pid))
        pid, items = pid[order], items[order]
        leaf_root = np.array([lf.root for lf in LEAVES])
        parent = np.concatenate(
            [
                [0],
                P_ROOT + np.arange(3),
                P_ROOT + np.arange(3),
                P_ROOT + leaf_root,
                P_LEAF + np.arange(N_LEAF),
                P_ROOT + np.tile(np.arange(3), len(BRANDS)),
            ]
        )
        return cls(
            items,
            pid * KEY + cat.price[items],
            np.concatenate([[0.0], np.cumsum(cat.popularity[items])]),
            np.searchsorted(pid, np.arange(N_POOLS + 1)),
            parent.astype(np.int64),
        )

    def sample(self, rng: np.random.Generator, pid: IntArr, lo: IntArr, hi: IntArr) -> IntArr:
        """Popularity-weighted draw from pool ``pid`` among prices in [lo, hi] (falls back to wider pools)."""
        for _ in range(3):
            i_lo = np.searchsorted(self.key, pid * KEY + lo, "left")
            i_hi = np.searchsorted(self.key, pid * KEY + hi, "right")
            pid = np.where(i_hi <= i_lo, self.parent[pid], pid)
        i_lo = np.searchsorted(self.key, pid * KEY + lo, "left")
        i_hi = np.searchsorted(self.key, pid * KEY + hi, "right")
        empty = i_hi <= i_lo
        i_lo, i_hi = np.where(empty, self.bounds[pid], i_lo), np.where(empty, self.bounds[pid + 1], i_hi)
        empty = i_hi <= i_lo
        i_lo, i_hi = np.where(empty, self.bounds[0], i_lo), np.where(empty, self.bounds[1], i_hi)
        u = self.cw[i_lo] + rng.random(pid.size) * (self.cw[i_hi] - self.cw[i_lo])
        j = np.clip(np.searchsorted(self.cw, u, "right") - 1, i_lo, i_hi - 1)
        return np.asarray(self.item[j], dtype=np.int64)


def _group_first(group: IntArr) -> IntArr:
    """For a sorted group array, the index of each element's group start."""
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    return np.asarray(starts[np.cumsum(np.r_[True, group[1:] != group[:-1]]) - 1], dtype=np.int64)


def _timeline(rng: np.random.Generator, users: Users, start: int, end: int) -> Stream:
    n = users.root.size
    n_sess = np.where(users.new, 1, np.clip(np.round(rng.lognormal(np.log(12.0), 0.75, n)), 2, 150)).astype(
        np.int64
    )
    # active span [a, b]: most visitors span the whole window, some join late, some drift away early
    life = rng.choice(3, size=n, p=[0.55, 0.25, 0.20])
    a = np.where(life == 1, start + (rng.random(n) * (end - start - 9 * DAY)).astype(np.int64), start)
    b = np.where(life == 2, start + 9 * DAY + (rng.random(n) * (end - start - 9 * DAY)).astype(np.int64), end)
    b = np.where(users.new, end, b) - 7200
    a = np.where(users.new, end - 7 * DAY, a)
    first = a + (rng.random(n) * (np.where(users.new, b, np.minimum(b, end - 8 * DAY)) - a)).astype(np.int64)
    s_user = np.repeat(np.arange(n), n_sess)
    is_first = np.r_[True, s_user[1:] != s_user[:-1]]
    later = a[s_user] + (rng.random(s_user.size) * (b - a)[s_user]).astype(np.int64)
    s_start = _diurnal(rng, np.where(is_first, first[s_user], later))
    lo_t = np.where(users.new[s_user], end - 7 * DAY, start)
    s_start = np.clip(np.where(s_start < lo_t, s_start + DAY, s_start), lo_t, end - 3600)
    order = np.lexsort((s_start, s_user))
    s_user, s_start = s_user[order], s_start[order]
    new_s = users.new[s_user]
    views = np.where(
        new_s, rng.integers(1, 4, size=s_user.size), np.minimum(rng.geometric(0.22, s_user.size), 30)
    )

    slot_session = np.repeat(np.arange(s_user.size), views)
    sess_first = np.cumsum(views) - views
    pos = np.arange(slot_session.size) - sess_first[slot_session]
    m = slot_session.size
    new_slot = new_s[slot_session]
    has_search = np.where(
        new_slot, (pos == 0) & (views[slot_session] <= 2) & (rng.random(m) < 0.25), rng.random(m) < 0.075
    )
    s_gap = np.where(has_search, rng.integers(6, 40, size=m), 0)
    c_gap = rng.integers(4, 45, size=m)
    slot_len = s_gap + c_gap + 5 + np.minimum(rng.exponential(45.0, m), 560).astype(np.int64)
    excl = np.cumsum(slot_len) - slot_len
    offset = excl - excl[sess_first[slot_session]]
    duration = np.bincount(slot_session, weights=slot_len).astype(np.int64)
    checkout_gap = rng.integers(30, 240, size=s_user.size)

    # push sessions apart so that a visitor is idle >= GAP between them: start_k = D_k + max_{j<=k}(s_j - D_j)
    length = duration + checkout_gap + views + GAP
    lex = np.cumsum(length) - length
    d = lex - lex[_group_first(s_user)]
    big = 10**11
    fixed = np.maximum.accumulate(s_start - d + s_user * big) - s_user * big + d
    t_search = fixed[slot_session] + offset
    t_view = t_search + s_gap
    empty = np.zeros(m, dtype=np.int64)
    return Stream(
        slot_session,
        s_user[slot_session],
        pos,
        t_search,
        t_view,
        t_view + c_gap,
        has_search,
        empty,
        empty.astype(bool),
        empty.astype(bool),
        empty.astype(bool),
        s_user,
        fixed,
        fixed + duration + checkout_gap,
    )


def make_stream(
    rng: np.random.Generator, cat: Catalog, users: Users, planted: Planted, start: int, end: int
) -> Stream:
    st = _timeline(rng, users, start, end)
    m, u = st.t_view.size, st.slot_user
    r = rng.random(m)
    kind = users.kind[u]
    mode = np.where(
        r < users.focus[u],
        np.where(kind == LOYAL, M_BRAND, M_LEAF),
        np.where(r > 1 - NOISE, M_NOISE, M_GENERIC),
    )
    root = users.root[u]
    switch = (mode == M_GENERIC) & (rng.random(m) < 0.06)  # a glance at another part of the shop
    root = np.where(switch, (root + rng.integers(1, 3, size=m)) % 3, root)
    sale = users.hunter[u] & (rng.random(m) < 0.55)
    pid = np.select(
        [mode == M_BRAND, mode == M_LEAF, mode == M_GENERIC],
        [
            P_BRAND + 3 * users.brand[u] + root,
            np.where(sale, P_LEAF_SALE, P_LEAF) + users.leaf[u],
            np.where(sale, P_ROOT_SALE, P_ROOT) + root,
        ],
        0,
    )
    windowed = (mode == M_LEAF) | (mode == M_GENERIC)
    centre = users.centre[u]
    lo, hi = np.where(windowed, centre - WINDOW, 0), np.where(windowed, centre + WINDOW, KEY - 1)

    # items exist only from their creation day on: new arrivals are drawn only late, and redrawn if too early
    old_pools, all_pools = Pools.build(cat, cat.created < start), Pools.build(cat, np.ones(cat.n, dtype=bool))
    late = st.t_view >= end - 14 * DAY
    item = old_pools.sample(rng, pid, lo, hi)
    item[late] = all_pools.sample(rng, pid[late], lo[late], hi[late])
    for _ in range(20):
        bad = np.flatnonzero(cat.created[item] > st.t_view)
        if bad.size == 0:
            break
        item[bad] = all_pools.sample(rng, pid[bad], lo[bad], hi[bad])
    bad = np.flatnonzero(cat.created[item] > st.t_view)
    item[bad] = old_pools.sample(rng, pid[bad], lo[bad], hi[bad])

    # trending: in the last 7 days more and more generic views land on a few items
    tr = planted.trending[np.argsort(cat.root[planted.trending], kind="stable")]
    tr_count = np.bincount(cat.root[tr], minlength=3)
    tr_start = np.cumsum(tr_count) - tr_count
    ramp = np.clip((st.t_view - (end - 7 * DAY)) / (7 * DAY), 0.0, 1.0)
    hit = (kind != LOYAL) & ((mode == M_GENERIC) | (mode == M_NOISE)) & (rng.random(m) < 0.45 * ramp)
    hit &= tr_count[users.root[u]] > 0
    for _ in range(3):  # a few tries to find a trending item inside the visitor's price band
        pick = tr_start[users.root[u]] + (rng.random(m) * tr_count[users.root[u]]).astype(np.int64)
        cand = tr[np.minimum(pick, max(tr.size - 1, 0))] if tr.size else item
        ok = hit & (np.abs(cat.price[cand] - centre) <= WINDOW)
        item = np.where(ok, cand, item)
        hit &= ~ok

    # planted pairs: right after a view of a, the next view of the session is usually b
    b_of = np.full(cat.n, -1, dtype=np.int64)
    b_of[planted.pairs[:, 0]] = planted.pairs[:, 1]
    follow_draw = rng.random(m)
    followed = np.zeros(m, dtype=bool)
    for k in range(1, int(st.pos.max(initial=0)) + 1):
        idx = np.flatnonzero(st.pos == k)
        nxt = b_of[item[idx - 1]]
        ok = (nxt >= 0) & (follow_draw[idx] < P_FOLLOW)
        item[idx[ok]] = nxt[ok]
        followed[idx[ok]] = True

    # funnel: ~1 add-to-cart per 8 views, ~40% of carts bought; hunters cart and buy on-sale items
    on_sale, hunter = cat.on_sale[item], users.hunter[u]
    p_cart = 0.125 * np.where(hunter, np.where(on_sale, 1.6, 0.45), np.where(on_sale, 1.1, 1.0))
    blocked = (~cat.in_stock[item] & (st.t_view >= end - 10 * DAY)) | (users.new[u] & (st.pos > 0))
    cart = (rng.random(m) < p_cart) & ~blocked
    p_buy = 0.42 * np.where(hunter & ~on_sale, 0.3, 1.0)
    prev = np.maximum(np.arange(m) - 1, 0)
    cart = np.where(followed & cart[prev], (rng.random(m) < 0.7) & ~blocked, cart)
    buy = cart & (rng.random(m) < p_buy)
    buy = np.where(followed & buy[prev], cart & (rng.random(m) < 0.9), buy)

    st.item, st.followed, st.cart, st.buy = item, followed, cart, buy
    st.has_search = st.has_search & ~followed
    return st
