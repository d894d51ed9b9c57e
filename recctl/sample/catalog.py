"""Synthetic fashion catalogue: brands, a three-level category tree and the items.

Everything is drawn from the generator passed in, so the catalogue is a pure function of the seed.
Prices are kept as integer cents to avoid any float rounding in the written files.

Besides the fashion items (``make_catalog``) the shop sells a small *care range* of consumables
(``make_care``: socks, tights, shoe polish, hand cream; $5-$25, never on sale, always in stock), the items
some visitors re-buy on a cycle (see ``recctl.sample.habits``). It is drawn from its own generator and
appended after the fashion items, so that adding it leaves the fashion catalogue and its events unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

IntArr = npt.NDArray[np.int64]
FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
StrArr = npt.NDArray[np.str_]

DAY = 86_400
ROOTS = ("Women", "Men", "Kids")
ROOT_SHARE = (0.50, 0.35, 0.15)
AUDIENCE = ("women", "men", "kids")
COLORS = ("black", "white", "navy", "grey", "beige", "blue", "red", "green", "brown", "pink")
COLOR_P = (0.20, 0.12, 0.10, 0.10, 0.08, 0.09, 0.06, 0.07, 0.10, 0.08)
STYLES = ("casual", "classic", "sporty", "formal", "streetwear", "outdoor", "minimalist")
TIER_NAMES = ("budget", "mid", "premium")


@dataclass(frozen=True)
class Leaf:
    root: int
    group: str
    name: str  # display name, also the last level of the category path
    noun: str  # used in titles and search queries
    price_pos: float  # where in a brand's price range this leaf sits (0 cheap .. 1 dear)
    materials: tuple[str, ...]
    season: str
    weight: float

    @property
    def path(self) -> str:
        return f"{ROOTS[self.root]} > {self.group} > {self.name}"


@dataclass(frozen=True)
class Brand:
    name: str
    tier: int  # 0 budget, 1 mid, 2 premium
    lo: int  # dollars; every current price of the brand lies in [lo, hi], hi - lo <= 190
    hi: int
    roots: tuple[int, ...]
    size: float  # relative assortment size

    @property
    def centre_cents(self) -> int:
        return (self.lo + self.hi) * 50


_CLOTH = ("cotton", "linen", "polyester", "silk")
LEAVES: tuple[Leaf, ...] = (
    Leaf(0, "Clothing", "Dresses", "dress", 0.55, _CLOTH, "all", 1.3),
    Leaf(0, "Clothing", "Tops", "top", 0.25, _CLOTH, "all", 1.3),
    Leaf(0, "Clothing", "Jeans", "jeans", 0.45, ("denim",), "all", 1.0),
    Leaf(0, "Clothing", "Jackets", "jacket", 0.90, ("denim", "leather", "wool", "nylon"), "autumn", 1.0),
    Leaf(0, "Shoes", "Sneakers", "sneakers", 0.50, ("leather", "canvas", "mesh", "suede"), "all", 1.2),
    Leaf(0, "Shoes", "Boots", "boots", 0.85, ("leather", "suede"), "winter", 0.8),
    Leaf(0, "Shoes", "Sandals", "sandals", 0.30, ("leather", "rubber", "canvas"), "summer", 0.7),
    Leaf(0, "Shoes", "Heels", "heels", 0.65, ("leather", "suede", "satin"), "all", 0.7),
    Leaf(0, "Accessories", "Bags", "bag", 0.70, ("leather", "canvas", "nylon"), "all", 1.0),
    Leaf(0, "Accessories", "Scarves", "scarf", 0.20, ("wool", "silk", "cotton"), "winter", 0.6),
    Leaf(0, "Accessories", "Jewelry", "necklace", 0.40, ("silver", "metal", "pearl"), "all", 0.6),
    Leaf(1, "Clothing", "Shirts", "shirt", 0.40, ("cotton", "linen", "flannel"), "all", 1.1),
    Leaf(1, "Clothing", "T-Shirts", "t-shirt", 0.15, ("cotton", "jersey"), "summer", 1.1),
    Leaf(1, "Clothing", "Jeans", "jeans", 0.45, ("denim",), "all", 1.0),
    Leaf(1, "Clothing", "Jackets", "jacket", 0.90, ("leather", "wool", "denim", "nylon"), "autumn", 0.9),
    Leaf(1, "Clothing", "Hoodies", "hoodie", 0.35, ("fleece", "cotton"), "autumn", 0.9),
    Leaf(1, "Shoes", "Sneakers", "sneakers", 0.50, ("leather", "canvas", "mesh", "suede"), "all", 1.1),
    Leaf(1, "Shoes", "Boots", "boots", 0.85, ("leather", "suede"), "winter", 0.7),
    Leaf(1, "Shoes", "Loafers", "loafers", 0.60, ("leather", "suede"), "all", 0.5),
    Leaf(1, "Accessories", "Belts", "belt", 0.20, ("leather", "canvas"), "all", 0.5),
    Leaf(1, "Accessories", "Watches", "watch", 0.95, ("metal", "leather", "silicone"), "all", 0.5),
    Leaf(1, "Accessories", "Scarves", "scarf", 0.20, ("wool", "cotton", "cashmere"), "winter", 0.4),
    Leaf(1, "Accessories", "Hats", "cap", 0.10, ("cotton", "wool"), "all", 0.5),
    Leaf(2, "Clothing", "T-Shirts", "t-shirt", 0.15, ("cotton", "jersey"), "summer", 1.2),
    Leaf(2, "Clothing", "Hoodies", "hoodie", 0.35, ("fleece", "cotton"), "autumn", 1.0),
    Leaf(2, "Clothing", "Pants", "pants", 0.35, ("cotton", "denim", "fleece"), "all", 1.0),
    Leaf(2, "Shoes", "Sneakers", "sneakers", 0.50, ("canvas", "mesh", "leather"), "all", 1.0),
    Leaf(2, "Shoes", "Sandals", "sandals", 0.30, ("rubber", "leather"), "summer", 0.6),
    Leaf(2, "Accessories", "Backpacks", "backpack", 0.50, ("nylon", "canvas", "polyester"), "all", 0.6),
    Leaf(2, "Accessories", "Hats", "hat", 0.10, ("cotton", "wool"), "all", 0.5),
)

# the care range (consumables): leaf numbers N_FASHION.. in ALL_LEAVES; price_pos places an item in $5-$25
CARE_LEAVES: tuple[Leaf, ...] = (
    Leaf(0, "Accessories", "Socks & Tights", "tights", 0.35, ("nylon", "cotton", "wool"), "all", 1.1),
    Leaf(0, "Accessories", "Care", "hand cream", 0.55, ("shea", "aloe", "argan"), "all", 0.6),
    Leaf(1, "Accessories", "Socks", "socks", 0.25, ("cotton", "wool", "bamboo"), "all", 1.1),
    Leaf(1, "Accessories", "Shoe Care", "shoe polish", 0.45, ("wax", "cream", "spray"), "all", 0.6),
    Leaf(2, "Accessories", "Socks", "socks", 0.2, ("cotton", "bamboo"), "all", 0.5),
)
N_FASHION = len(LEAVES)
ALL_LEAVES = LEAVES + CARE_LEAVES  # what ``Catalog.leaf`` indexes
CARE_PRICE = (5, 25)  # dollars: every care item costs at least $5.00 and less than $25

_WMK, _WM = (0, 1, 2), (0, 1)
BRANDS: tuple[Brand, ...] = (
    Brand("Basico", 0, 10, 30, _WMK, 1.3),
    Brand("Trendly", 0, 12, 40, (0,), 1.2),
    Brand("PopStreet", 0, 10, 35, _WM, 1.1),
    Brand("LittleSprout", 0, 10, 35, (2,), 1.0),
    Brand("EveryWear", 0, 14, 40, _WMK, 1.2),
    Brand("CityBasics", 0, 12, 38, (1,), 1.0),
    Brand("SunnyDay", 0, 10, 30, (0, 2), 0.9),
    Brand("Stride", 0, 15, 40, _WMK, 0.9),
    Brand("Northwind", 1, 40, 110, _WM, 1.1),
    Brand("Harbor & Co", 1, 45, 120, _WM, 1.0),
    Brand("Velora", 1, 50, 120, (0,), 1.0),
    Brand("Ridgeline", 1, 45, 115, (1, 2), 0.9),
    Brand("Copper Lane", 1, 40, 100, _WM, 1.0),
    Brand("Solstice", 1, 40, 95, (0, 2), 0.9),
    Brand("Alder", 1, 55, 120, (1,), 0.8),
    Brand("Meridian", 1, 50, 120, _WM, 0.9),
    Brand("Kinfolk", 1, 40, 90, _WMK, 0.8),
    Brand("Pace Athletics", 1, 45, 120, _WMK, 1.0),
    Brand("Maison Aure", 2, 160, 350, (0,), 0.6),
    Brand("Valenti", 2, 210, 400, _WM, 0.5),
    Brand("Oberon", 2, 130, 300, (1,), 0.6),
    Brand("Lumière", 2, 140, 320, (0,), 0.6),
    Brand("Hartwell", 2, 120, 280, _WM, 0.7),
    Brand("Sable & Stone", 2, 170, 360, _WM, 0.5),
    Brand("Atelier Nord", 2, 210, 400, _WM, 0.4),
)


@dataclass
class Catalog:
    """Column arrays of the catalogue, indexed by item number (sku ``p{index:04d}``)."""

    root: IntArr
    leaf: IntArr
    brand: IntArr
    color: StrArr
    material: StrArr
    style: StrArr
    season: StrArr
    gender: StrArr
    price: IntArr  # current price in cents
    list_price: IntArr  # cents; > price when on sale
    in_stock: BoolArr
    created: IntArr  # epoch seconds
    updated: IntArr
    popularity: FloatArr  # base sampling weight
    rating: FloatArr  # NaN when the item has no reviews
    reviews: IntArr
    likes: IntArr

    @property
    def n(self) -> int:
        return int(self.price.shape[0])

    @property
    def on_sale(self) -> BoolArr:
        return np.asarray(self.list_price > self.price)

    def sku(self) -> list[str]:
        return [f"p{i:04d}" for i in range(self.n)]


def _pick(rng: np.random.Generator, options: tuple[str, ...], n: int) -> StrArr:
    return np.asarray(options, dtype=np.str_)[rng.integers(0, len(options), size=n)]


def make_catalog(rng: np.random.Generator, n_items: int, start: int, end: int) -> Catalog:
    """Draw ``n_items`` items; ``start``/``end`` bound the event window in epoch seconds."""
    n = n_items
    root = rng.choice(3, size=n, p=ROOT_SHARE).astype(np.int64)
    leaf = np.zeros(n, dtype=np.int64)
    brand = np.zeros(n, dtype=np.int64)
    for r in range(3):
        idx = np.flatnonzero(root == r)
        leaves = [i for i, lf in enumerate(LEAVES) if lf.root == r]
        lw = np.array([LEAVES[i].weight for i in leaves])
        leaf[idx] = np.asarray(leaves)[rng.choice(len(leaves), size=idx.size, p=lw / lw.sum())]
        brands = [i for i, b in enumerate(BRANDS) if r in b.roots]
        bw = np.array([BRANDS[i].size for i in brands])
        brand[idx] = np.asarray(brands)[rng.choice(len(brands), size=idx.size, p=bw / bw.sum())]

    lo = np.array([b.lo for b in BRANDS])[brand]
    hi = np.array([b.hi for b in BRANDS])[brand]
    pos = np.clip(np.array([lf.price_pos for lf in LEAVES])[leaf] + rng.normal(0.0, 0.18, n), 0.0, 1.0)
    ending = rng.choice(np.array([99, 49, 0]), size=n, p=[0.7, 0.15, 0.15])
    price = (np.floor(lo + pos * (hi - lo)).astype(np.int64) * 100 + ending).clip(lo * 100, hi * 100 - 1)
    on_sale = rng.random(n) < 0.25
    discount = rng.choice(np.array([0.15, 0.2, 0.25, 0.3, 0.4, 0.5]), size=n)
    list_price = np.where(
        on_sale, np.ceil(price / (1.0 - discount) / 100.0).astype(np.int64) * 100 - 1, price
    )
    list_price = np.where(on_sale, np.maximum(list_price, price + 100), price).astype(np.int64)

    new = rng.random(n) < 0.06
    created_day = np.where(
        new,
        rng.integers(end // DAY - 14, end // DAY, size=n),
        rng.integers(start // DAY - 730, start // DAY - 1, size=n),
    )
    created = created_day * DAY
    age_days = (end - created) // DAY
    upd = np.where(on_sale, rng.integers(1, 30, size=n), (rng.random(n) * age_days).astype(np.int64))
    updated = np.maximum(created, (end // DAY - np.minimum(upd, age_days)) * DAY)

    rating_base = np.clip(rng.normal(4.1, 0.45, n), 1.0, 5.0)
    popularity = rng.lognormal(0.0, 1.0, n) * (0.6 + 0.1 * rating_base)
    reviews = rng.poisson(popularity * 12.0 * np.minimum(age_days, 365) / 365.0).astype(np.int64)
    rating = np.where(reviews > 0, np.round(rating_base, 1), np.nan)
    likes = rng.poisson(reviews * 2.5 + popularity * 15.0).astype(np.int64)

    mat_idx = rng.integers(0, 1_000_000, size=n)
    material = np.array(
        [LEAVES[lf].materials[m % len(LEAVES[lf].materials)] for lf, m in zip(leaf, mat_idx, strict=True)]
    )
    leaf_season = np.array([lf.season for lf in LEAVES])[leaf]
    season = np.where(rng.random(n) < 0.7, leaf_season, _pick(rng, ("all", "spring", "summer", "autumn"), n))
    unisex = (root == 2) | (rng.random(n) < 0.08)
    gender = np.where(unisex, "unisex", np.where(root == 0, "women", "men"))

    cat = Catalog(
        root=root,
        leaf=leaf,
        brand=brand,
        color=np.asarray(COLORS, dtype=np.str_)[rng.choice(len(COLORS), size=n, p=COLOR_P)],
        material=material.astype(np.str_),
        style=_pick(rng, STYLES, n),
        season=season.astype(np.str_),
        gender=gender.astype(np.str_),
        price=price,
        list_price=list_price,
        in_stock=rng.random(n) >= 0.05,
        created=created.astype(np.int64),
        updated=updated.astype(np.int64),
        popularity=popularity,
        rating=rating,
        reviews=reviews,
        likes=likes,
    )
    # skus follow the shop's creation order: p0000 is the oldest item, new arrivals get the last numbers
    # (of the fashion items: the care range, see make_care, is numbered after them)
    order = np.lexsort((rng.random(n), cat.created))
    for field, value in vars(cat).items():
        setattr(cat, field, value[order])
    return cat


def make_care(rng: np.random.Generator, n_items: int, start: int, end: int) -> Catalog:
    """The care range: ``n_items`` cheap consumables (every care leaf stocked), all older than the window.

    Brands are the budget and mid-range fashion brands of the leaf's part of the shop (the shop's own
    socks and shoe polish); prices lie in ``CARE_PRICE``; none is on sale and all are in stock, so that
    a re-buy is never blocked. Skus within the range follow creation order.
    """
    quota = n_items * np.array([lf.weight for lf in CARE_LEAVES]) / sum(lf.weight for lf in CARE_LEAVES)
    per_leaf = np.floor(quota).astype(np.int64)  # largest remainders get the rest
    per_leaf[np.argsort(per_leaf - quota, kind="stable")[: n_items - int(per_leaf.sum())]] += 1
    per_leaf = np.maximum(per_leaf, 1)
    care_leaf = np.repeat(np.arange(len(CARE_LEAVES)), per_leaf)
    n = care_leaf.size
    root = np.array([lf.root for lf in CARE_LEAVES], dtype=np.int64)[care_leaf]
    brand = np.zeros(n, dtype=np.int64)
    for r in range(3):
        idx = np.flatnonzero(root == r)
        brands = [i for i, b in enumerate(BRANDS) if r in b.roots and b.tier < 2]
        bw = np.array([BRANDS[i].size for i in brands])
        brand[idx] = np.asarray(brands)[rng.choice(len(brands), size=idx.size, p=bw / bw.sum())]
    lo, hi = CARE_PRICE
    pos = np.clip(np.array([lf.price_pos for lf in CARE_LEAVES])[care_leaf] + rng.normal(0.0, 0.2, n), 0, 1)
    ending = rng.choice(np.array([99, 49, 0]), size=n, p=[0.7, 0.15, 0.15])
    price = (np.floor(lo + pos * (hi - lo)).astype(np.int64) * 100 + ending).clip(lo * 100, hi * 100 - 1)

    created = rng.integers(start // DAY - 730, start // DAY - 30, size=n) * DAY
    age_days = (end - created) // DAY
    upd = (rng.random(n) * age_days).astype(np.int64)
    updated = np.maximum(created, (end // DAY - np.minimum(upd, age_days)) * DAY)
    rating_base = np.clip(rng.normal(4.3, 0.35, n), 1.0, 5.0)
    popularity = rng.lognormal(0.0, 0.6, n) * (0.6 + 0.1 * rating_base)
    reviews = rng.poisson(popularity * 20.0 * np.minimum(age_days, 365) / 365.0).astype(np.int64)
    materials = [CARE_LEAVES[lf].materials for lf in range(len(CARE_LEAVES))]
    mat_idx = rng.integers(0, 1_000_000, size=n)
    material = np.array(
        [materials[lf][m % len(materials[lf])] for lf, m in zip(care_leaf, mat_idx, strict=True)]
    )
    care = Catalog(
        root=root,
        leaf=care_leaf + N_FASHION,
        brand=brand,
        color=np.asarray(COLORS, dtype=np.str_)[rng.choice(len(COLORS), size=n, p=COLOR_P)],
        material=material.astype(np.str_),
        style=_pick(rng, ("classic", "sporty", "minimalist", "casual"), n),
        season=np.full(n, "all"),
        gender=np.asarray(("women", "men", "unisex"), dtype=np.str_)[root],
        price=price,
        list_price=price.copy(),
        in_stock=np.ones(n, dtype=bool),
        created=created.astype(np.int64),
        updated=updated.astype(np.int64),
        popularity=popularity,
        rating=np.where(reviews > 0, np.round(rating_base, 1), np.nan),
        reviews=reviews,
        likes=rng.poisson(reviews * 1.5 + popularity * 8.0).astype(np.int64),
    )
    order = np.lexsort((rng.random(n), care.created))
    for field, value in vars(care).items():
        setattr(care, field, value[order])
    return care


def concat(a: Catalog, b: Catalog) -> Catalog:
    """``b``'s items numbered after ``a``'s."""
    return Catalog(**{f: np.concatenate([v, getattr(b, f)]) for f, v in vars(a).items()})


_SEASON_LINE = {
    "all": "Easy to wear all year round.",
    "spring": "A fresh pick for spring.",
    "summer": "Light and breathable for summer days.",
    "autumn": "Made for cool autumn weather.",
    "winter": "Keeps you warm through winter.",
}


def item_texts(cat: Catalog) -> pl.DataFrame:
    """Titles and descriptions built from brand, colour, material, style and leaf (shared vocabulary)."""
    df = pl.DataFrame(
        {
            "brand": np.array([b.name for b in BRANDS])[cat.brand],
            "noun": np.array([lf.noun for lf in ALL_LEAVES])[cat.leaf],
            "leafname": np.array([lf.name.lower() for lf in ALL_LEAVES])[cat.leaf],
            "audience": np.array(AUDIENCE)[cat.root],
            "color": cat.color,
            "material": cat.material,
            "style": cat.style,
            "season_line": np.array([_SEASON_LINE[s] for s in cat.season]),
            "template": np.arange(cat.n) % 3,
        }
    )
    c = pl.col
    title = pl.concat_str(
        [c.brand, c.color.str.to_titlecase(), c.material.str.to_titlecase(), c.noun.str.to_titlecase()],
        separator=" ",
    )
    desc = (
        pl.when(c.template == 0)
        .then(
            pl.format(
                "{} {} {} {} for {} by {}. {}",
                c.style.str.to_titlecase(),
                c.color,
                c.material,
                c.noun,
                c.audience,
                c.brand,
                c.season_line,
            )
        )
        .when(c.template == 1)
        .then(
            pl.format(
                "{} {} in {} {}: a {} staple of the {} {} range. {}",
                c.brand,
                c.noun,
                c.color,
                c.material,
                c.style,
                c.audience,
                c.leafname,
                c.season_line,
            )
        )
        .otherwise(
            pl.format(
                "{} {} {} in a {} cut for {}, designed by {}. {}",
                c.color.str.to_titlecase(),
                c.material,
                c.noun,
                c.style,
                c.audience,
                c.brand,
                c.season_line,
            )
        )
    )
    return df.select(title.alias("name"), desc.alias("description"))


PAIR_RULES = (  # (root, leaf of a, leaf of b): "the jacket, then the matching scarf"
    (0, "Jackets", "Scarves"),
    (0, "Dresses", "Heels"),
    (0, "Jeans", "Sneakers"),
    (0, "Tops", "Bags"),
    (1, "Jackets", "Scarves"),
    (1, "Shirts", "Belts"),
    (1, "Jeans", "Boots"),
    (1, "Hoodies", "Sneakers"),
    (1, "T-Shirts", "Hats"),
    (2, "Hoodies", "Backpacks"),
    (2, "Pants", "Sneakers"),
)


@dataclass
class Planted:
    pairs: IntArr  # (n, 2) item numbers
    trending: IntArr


def plant(rng: np.random.Generator, cat: Catalog, start: int) -> Planted:
    """Choose the trending items and the ordered (a, b) pairs; lowers the trending items' base weight."""
    n = cat.n
    eligible = cat.in_stock & (cat.created < start)
    pop_rank = np.argsort(np.argsort(cat.popularity)) / n
    trending: list[int] = []
    for r, share in enumerate((0.45, 0.35, 0.20)):
        cand = np.flatnonzero(eligible & (cat.root == r) & (pop_rank > 0.4) & (pop_rank < 0.9))
        k = min(cand.size, max(1, round(n / 75 * share)))
        trending.extend(rng.choice(cand, size=k, replace=False).tolist())
    trend = np.sort(np.asarray(trending, dtype=np.int64))
    cat.popularity[trend] *= 0.5
    eligible[trend] = False

    names = [(lf.root, lf.name) for lf in LEAVES]
    cands: list[tuple[int, int]] = []
    for root, leaf_a, leaf_b in PAIR_RULES:
        la, lb = names.index((root, leaf_a)), names.index((root, leaf_b))
        for b in range(len(BRANDS)):
            a_items = rng.permutation(
                np.flatnonzero(eligible & (cat.leaf == la) & (cat.brand == b) & (pop_rank > 0.3))
            )
            b_items = rng.permutation(np.flatnonzero(eligible & (cat.leaf == lb) & (cat.brand == b)))
            if a_items.size == 0 or b_items.size == 0:
                continue
            for a in a_items[: b_items.size]:
                same = b_items[cat.color[b_items] == cat.color[a]]  # prefer the matching colour
                cands.append((int(a), int(same[0] if same.size else rng.choice(b_items))))
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for i in rng.permutation(len(cands)):
        a, b = cands[i]
        if a not in used and b not in used and len(pairs) < round(n / 25):
            pairs.append((a, b))
            used.update((a, b))
    pair_arr = np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return Planted(pair_arr, trend)
