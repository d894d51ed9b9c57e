"""Consumable habits: planted visitors re-buy one care item on a cycle, so "buy it again" has a known answer.

About 7 % of the visitors each re-buy ONE item of the care range (``catalog.make_care``: socks, tights,
shoe polish, hand cream, $5-$25), a quarter of them a second one in the same orders, every
``every_days`` days (7..21 per visitor; each gap is the cycle give or take a day) all through the
window. The planted visitors are returning visitors with no brand or category focus and no discount
hunting whose price band holds the whole care range: their re-buys blur no other planted truth. Each
re-buy is its own short session at the visitor's usual hour (give or take one): a product view and an
add-to-cart per item, then the purchase at checkout under its own order id.

The schedule runs backwards from the last purchase. For half of the visitors whose cycle allows it (in
a 90-day window, cycles up to 16 days) the last purchase lies one to three days more than a cycle before
the end, so they are *due* at the end of the window; the others bought two days to a cycle minus three
days before it. ``ground_truth.json`` has, per visitor, ``item_id``, ``also_item_ids``, ``every_days``,
``last_purchase`` and ``due_at_end`` (days from ``last_purchase`` to the end >= ``every_days`` - 1,
computed from the written events). A window of 90 days holds at least five purchases of every habit.

Other returning visitors (not the brand-loyal ones, whose loyalty a cheap other-brand buy would blur)
browse the care range now and then (one to three sessions inside their usual span of activity, often
opening on one favourite item, sometimes buying it): the distractor for a re-buy model, a repeat
without a cycle, and rarely four times.

No new session comes closer than the stream's idle gap to another session of the visitor: a clashing
start is redrawn (another hour; a habit keeps its day), a few times, then dropped. Everything here is
drawn from its own generator and appended to the fashion stream of ``recctl.sample.behaviour``, which
stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recctl.sample.behaviour import GAP, HOURS, LOYAL, PLAIN, WINDOW, Stream, Users
from recctl.sample.catalog import DAY, N_FASHION, BoolArr, Catalog, IntArr

P_HABIT = 0.07  # share of visitors with a habit
P_SECOND = 0.25  # share of those who re-buy a second item in the same orders
EVERY = (7, 21)  # cycle length in days, inclusive
P_DUE = 0.5  # share of habits laid out to be due at the end of the window (where the cycle allows it)
MIN_BUYS = 5  # purchases a cycle must leave room for
P_BROWSE = 0.3  # share of the other returning visitors who browse the care range
P_FAVOURITE = 0.5  # P(a browsing session opens on the visitor's favourite care item)
TRIES = 30  # redraws of a session start that clashes with the visitor's other sessions
BIG = 10**11  # user stride of the (user, time) search key; times stay below it


@dataclass
class Habits:
    """One entry per planted visitor (sorted by visitor)."""

    user: IntArr
    item: IntArr
    also: IntArr  # second item bought in the same orders, or -1
    every: IntArr  # days
    last: IntArr  # epoch seconds of the visitor's last purchase of ``item`` in the window
    due: BoolArr  # days from ``last`` to the end of the window >= every - 1


@dataclass
class _Busy:
    """Time intervals [start, end] of sessions, sorted by (user, start) and disjoint per user."""

    user: IntArr
    start: IntArr
    end: IntArr

    @classmethod
    def of(cls, user: IntArr, start: IntArr, end: IntArr) -> _Busy:
        order = np.lexsort((start, user))
        return cls(user[order], start[order], end[order])

    def add(self, user: IntArr, start: IntArr, end: IntArr) -> _Busy:
        return _Busy.of(
            np.concatenate([self.user, user]),
            np.concatenate([self.start, start]),
            np.concatenate([self.end, end]),
        )

    def clash(self, user: IntArr, a: IntArr, b: IntArr) -> BoolArr:
        """Whether [a, b] comes closer than GAP to one of the user's intervals."""
        i = np.searchsorted(self.user * BIG + self.start, user * BIG + b + GAP, "left") - 1
        j = np.maximum(i, 0)  # the last interval starting before b + GAP: it has the latest end of those
        return np.asarray((i >= 0) & (self.user[j] == user) & (self.end[j] + GAP > a))


def _self_clash(user: IntArr, a: IntArr, b: IntArr) -> BoolArr:
    """Whether [a, b] starts less than GAP after the end of an earlier interval of the same user."""
    order = np.lexsort((a, user))
    u, a_s, b_s = user[order], a[order], b[order]
    latest = np.maximum.accumulate(b_s + u * BIG) - u * BIG  # running max of the ends within a user
    same = np.r_[False, u[1:] == u[:-1]]
    bad = np.zeros(user.size, dtype=bool)
    bad[order] = same & (a_s < np.r_[0, latest[:-1]] + GAP)
    return bad


@dataclass
class _Sessions:
    """New sessions before they are placed in time: per-slot items and funnel, offsets from the start."""

    user: IntArr  # per session
    slot_session: IntArr  # per slot, non-decreasing
    item: IntArr
    cart: BoolArr
    buy: BoolArr
    offset: IntArr  # view time after the session start
    c_gap: IntArr  # view to add-to-cart, seconds
    checkout: IntArr  # per session: checkout time after the start
    length: IntArr  # per session: an upper bound of the last event's time after the start

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        user: IntArr,
        slot_session: IntArr,
        item: IntArr,
        cart: BoolArr,
        buy: BoolArr,
    ) -> _Sessions:
        """The timing of the slots, as in the fashion stream (no searches)."""
        m, s = item.size, user.size
        c_gap = rng.integers(4, 45, size=m)
        slot_len = c_gap + 5 + np.minimum(rng.exponential(45.0, m), 560).astype(np.int64)
        per = np.bincount(slot_session, minlength=s)
        excl = np.cumsum(slot_len) - slot_len
        offset = excl - excl[(np.cumsum(per) - per)[slot_session]]
        checkout = np.bincount(slot_session, weights=slot_len, minlength=s).astype(np.int64)
        checkout += rng.integers(30, 240, size=s)
        return cls(user, slot_session, item, cart, buy, offset, c_gap, checkout, checkout + per)

    def stream(self, t: IntArr, keep: BoolArr) -> Stream:
        """The kept sessions, starting at ``t``, as a stream."""
        kept = keep[self.slot_session]
        sess = (np.cumsum(keep) - 1)[self.slot_session[kept]]
        per = np.bincount(sess, minlength=int(keep.sum()))
        t_view = t[self.slot_session[kept]] + self.offset[kept]
        no = np.zeros(t_view.size, dtype=bool)
        return Stream(
            slot_session=sess,
            slot_user=self.user[self.slot_session[kept]],
            pos=np.arange(sess.size) - (np.cumsum(per) - per)[sess],
            t_search=t_view,
            t_view=t_view,
            t_cart=t_view + self.c_gap[kept],
            has_search=no,
            item=self.item[kept],
            followed=no.copy(),
            cart=self.cart[kept],
            buy=self.buy[kept],
            sess_user=self.user[keep],
            sess_start=t[keep],
            sess_checkout=(t + self.checkout)[keep],
        )


def _hour(rng: np.random.Generator, size: int) -> IntArr:
    """An hour of the day, as often as the shop's traffic at that hour."""
    return np.asarray(rng.choice(24, size=size, p=HOURS / HOURS.sum()), dtype=np.int64)


def _place(
    rng: np.random.Generator,
    ss: _Sessions,
    draw: Callable[[IntArr, int], IntArr],
    busy: _Busy,
    start: int,
    end: int,
) -> tuple[IntArr, BoolArr]:
    """Start times ``draw(sessions, attempt)``, redrawn while they clash; False where none fits."""
    t = np.zeros(ss.user.size, dtype=np.int64)
    todo = np.ones(ss.user.size, dtype=bool)
    for attempt in range(TRIES):
        idx = np.flatnonzero(todo)
        if idx.size == 0:
            break
        t[idx] = draw(idx, attempt) + rng.integers(0, 3600, size=idx.size)
        b = t + ss.length
        todo = busy.clash(ss.user, t, b) | _self_clash(ss.user, t, b) | (t < start) | (b >= end)
    return t, ~todo


def _draw_care(rng: np.random.Generator, cat: Catalog, care: IntArr, root: IntArr) -> IntArr:
    """A popularity-weighted care item of each visitor's part of the shop (any part if it has none)."""
    out = np.zeros(root.size, dtype=np.int64)
    u = rng.random(root.size)
    for r in range(3):
        pool = care[cat.root[care] == r]
        pool = pool if pool.size else care
        cw = np.cumsum(cat.popularity[pool])
        who = root == r
        out[who] = pool[np.minimum(np.searchsorted(cw, u[who] * cw[-1], "right"), pool.size - 1)]
    return out


def make_habits(
    rng: np.random.Generator, cat: Catalog, users: Users, base: Stream, start: int, end: int
) -> tuple[Stream, Habits]:
    """The habit and care-browsing sessions (a stream to append to ``base``) and the planted habits."""
    n = users.root.size
    care = np.flatnonzero(cat.leaf >= N_FASHION)
    days, end_day = (end - start) // DAY, end // DAY
    per_sess = np.bincount(base.slot_session, minlength=base.sess_user.size)
    busy = _Busy.of(base.sess_user, base.sess_start, base.sess_checkout + per_sess)

    # the planted visitors, their item(s) and cycle; the schedule runs backwards from the end
    eligible = np.flatnonzero(
        (users.kind == PLAIN) & ~users.new & ~users.hunter & (users.centre - WINDOW <= cat.price[care].min())
    )
    who = np.sort(rng.choice(eligible, size=min(round(P_HABIT * n), eligible.size), replace=False))
    k = who.size
    item = _draw_care(rng, cat, care, users.root[who])
    also = np.where(rng.random(k) < P_SECOND, _draw_care(rng, cat, care, users.root[who]), -1)
    for _ in range(3):
        same = np.flatnonzero(also == item)
        also[same] = _draw_care(rng, cat, care, users.root[who[same]])
    also[also == item] = -1
    every = rng.integers(EVERY[0], EVERY[1] + 1, size=k)
    cap = days - (MIN_BUYS - 1) * (every + 1)  # most days from the last purchase to the end
    due = (rng.random(k) < P_DUE) & (every + 2 <= cap)
    hi = np.maximum(np.minimum(every - 3, cap), 2)
    since = np.where(due, every + rng.integers(0, 3, size=k), 2 + (rng.random(k) * (hi - 1)).astype(np.int64))
    # purchase days backwards from the last: each gap is the cycle give or take a day
    gaps = every[:, None] + rng.choice(3, size=(k, days // EVERY[0] + 1), p=[0.25, 0.5, 0.25]) - 1
    nominal = end_day - since[:, None] - np.cumsum(np.c_[np.zeros(k, dtype=np.int64), gaps], axis=1)
    h, col = np.nonzero(nominal >= start // DAY)
    day_h, usual = nominal[h, col], _hour(rng, k)[h]  # a habit is bought at about the same time of day
    two = also[h] >= 0
    slot_session = np.repeat(np.arange(h.size), 1 + two)
    second = np.r_[False, slot_session[1:] == slot_session[:-1]]
    habit = _Sessions.draw(
        rng,
        who[h],
        slot_session,
        np.where(second, also[h][slot_session], item[h][slot_session]),
        np.ones(slot_session.size, dtype=bool),
        np.ones(slot_session.size, dtype=bool),
    )

    def habit_time(i: IntArr, attempt: int) -> IntArr:  # the usual hour give or take one, then any hour
        hour = (usual[i] + rng.integers(-1, 2, size=i.size)) % 24 if attempt == 0 else _hour(rng, i.size)
        return np.asarray(day_h[i] * DAY + hour * 3600, dtype=np.int64)

    t_h, ok_h = _place(rng, habit, habit_time, busy, start, end)
    busy = busy.add(habit.user[ok_h], t_h[ok_h], (t_h + habit.length)[ok_h])
    last = np.full(k, -1, dtype=np.int64)
    np.maximum.at(last, h[ok_h], (t_h + habit.checkout)[ok_h])  # the first item of the order is `item`

    # care browsing by other returning visitors, inside their usual span of activity
    first, final = np.full(n, end, dtype=np.int64), np.zeros(n, dtype=np.int64)
    np.minimum.at(first, base.sess_user, base.sess_start)
    np.maximum.at(final, base.sess_user, base.sess_start)
    planted = np.zeros(n, dtype=bool)
    planted[who] = True
    browser = np.flatnonzero(
        ~users.new & ~planted & (users.kind != LOYAL) & (final > 0) & (rng.random(n) < P_BROWSE)
    )
    favourite = _draw_care(rng, cat, care, users.root[browser])
    s_owner = np.repeat(np.arange(browser.size), rng.integers(1, 4, size=browser.size))
    s_user = browser[s_owner]
    views = 1 + (rng.random(s_user.size) < 0.35)
    slot_session = np.repeat(np.arange(s_user.size), views)
    v_user = s_user[slot_session]
    pos = np.arange(slot_session.size) - (np.cumsum(views) - views)[slot_session]
    root = np.where(rng.random(v_user.size) < 0.9, users.root[v_user], rng.integers(0, 3, size=v_user.size))
    fav = (pos == 0) & (rng.random(v_user.size) < P_FAVOURITE)
    v_item = np.where(fav, favourite[s_owner[slot_session]], _draw_care(rng, cat, care, root))
    hunter = users.hunter[v_user]
    cart = rng.random(v_user.size) < np.where(hunter, 0.3 * 0.45, 0.3)
    buy = cart & (rng.random(v_user.size) < np.where(hunter, 0.5 * 0.3, 0.5))
    browse = _Sessions.draw(rng, s_user, slot_session, v_item, cart, buy)
    lo, span = first[s_user] // DAY, final[s_user] // DAY - first[s_user] // DAY + 1

    def browse_time(i: IntArr, attempt: int) -> IntArr:  # any day of the visitor's span, any hour
        day = lo[i] + (rng.random(i.size) * span[i]).astype(np.int64)
        return np.asarray(day * DAY + _hour(rng, i.size) * 3600, dtype=np.int64)

    t_b, ok_b = _place(rng, browse, browse_time, busy, start, end)

    got = last >= 0
    habits = Habits(
        who[got], item[got], also[got], every[got], last[got], (end - last[got]) >= (every[got] - 1) * DAY
    )
    return habit.stream(t_h, ok_h).concat(browse.stream(t_b, ok_b)), habits
