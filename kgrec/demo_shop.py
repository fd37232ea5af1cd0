"""A realistic synthetic shop in kgrec's data set layout, generated with numpy alone.

``generate_shop(ShopSpec(users=20_000, items=5_000, seed=7), folder)`` writes
``interactions.csv``, ``items.csv``, ``kg_triples.csv``, ``entities.csv`` and ``demo_shop.json``
(the parameters, the counts and the bot ids). Every step is vectorised (no
Python loop per event): a 1 M-event shop is generated and written at a median of 1.36 M
events/s on two shared cores (``bench.demo_generate``), and the same spec always writes
byte-identical files.

What it imitates (published figures, rounded; the generator's are
approximations, not fitted to any one data set):

- **Funnel.** Taobao UserBehavior (Alibaba Tianchi, Nov-Dec 2017) holds about
  89.7 M page views, 5.5 M add-to-carts and 2.0 M purchases: ~6 % of views lead
  to a cart, ~36 % of carts to a purchase, ~2.2 % of views to a purchase. REES46's
  multi-category store (Kechinov, "eCommerce behavior data from multi category
  store", Oct 2019: ~40.8 M views, 0.93 M carts, 0.74 M purchases) converts fewer
  views to carts (~2 %) because many purchases skip the cart; shops in between
  report 6-10 % view→cart and 30-60 % cart→purchase. Here: P(cart | view) = 8 %
  on average (higher for cheap items), P(purchase | cart) = 45 %, so ~3.6 % of
  views end in a purchase; a quarter of the carts not bought are removed again.
  These are rounded figures from the data sets' summaries, not a fit.
- **Popularity.** Item popularity in both logs follows a Zipf-like law,
  count ∝ rank^-a with a ≈ 0.9-1.1: here every item gets weight rank^-1.0 and
  users pick a category in proportion to its items' weights.
- **Sessions.** Sessions average about 5 views (geometric), a few seconds to a
  minute apart; users have a log-normal number of sessions (mean 3), so about 15
  events per user.
- **Time.** Traffic peaks in the evening (20-22 h) and is lowest near 4 h; the
  weekend carries about 20 % more traffic per day than mid-week.
- **Drift.** Each user moves from a first to a second favourite category over
  their active span; 10 % of the views wander to any category.
- **Taste.** Each user has one favourite colour (shade, material or flavour) per
  department, and half of the views that follow the user's category go to an
  item of that attribute (popularity-weighted within it). This is a modelling
  assumption, not a published figure: shoppers' attribute preferences are what
  makes attribute knowledge useful to a recommender, and the evaluation on this
  shop (README, "A KG-format fixture of our own") measures whether it is.
- **Bots.** About one user in 5,000 (at least one) is a crawler with hundreds of
  views per minute, above ``Settings.bot_events_per_minute`` (120).
- **Catalogue.** A two-level category tree (6 departments, 24 leaves), brands
  per department with Zipf popularity, titles built from per-leaf vocabularies
  (brand, adjective, colour or material, product noun), log-normal prices with a
  median per leaf. Brands and leaves are knowledge triples (``produced_by``,
  ``belongs_to``); ``also_bought``, ``bought_together`` and ``also_viewed`` come
  from the generated co-occurrences (a split rebuilds them without its test events:
  :class:`kgrec.datasets.DemoShopDataset`, :func:`event_links`). The title's attributes are triples too: its
  colour, shade, material or flavour (the relation named per department in
  :data:`ATTRIBUTE_RELATION`) and its adjective (``feature``), with the
  attribute entities' kinds in ``entities.csv``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
VIEW, CART, REMOVE, PURCHASE = range(4)
P_CART = 0.08
P_PURCHASE_GIVEN_CART = 0.45
P_REMOVE_GIVEN_ABANDONED = 0.25
POPULARITY_EXPONENT = 1.0
MEAN_VIEWS_PER_SESSION = 4.5
MEAN_SESSIONS_PER_USER = 3.0
P_WANDER = 0.10
USERS_PER_BOT = 5_000
P_TASTE = 0.5  # share of on-category views that go to the user's favourite attribute
FEATURE = "feature"  # the relation from an item to the adjective of its title
KNOWLEDGE_PER_ITEM = 10  # co-occurrence links kept per item and relation
EVENT_RELATIONS = ("also_bought", "bought_together", "also_viewed")  # derived from the events
DEFAULT_END = date(2026, 1, 1)

# Relative traffic per hour of day (0 h ... 23 h) and per weekday (Monday ... Sunday).
HOURLY = np.array(
    [3, 2, 1.5, 1.2, 1, 1.3, 2, 3.5, 5, 6, 6.5, 7, 7.5, 7, 6.5, 6.5, 7, 7.5, 8.5, 10, 11, 11, 9, 6]
)
WEEKLY = np.array([1.0, 0.97, 0.95, 0.97, 1.03, 1.2, 1.2])

# department -> colours or materials, adjectives, leaves; leaf -> (median price, product nouns)
DEPARTMENTS: dict[str, tuple[list[str], list[str], dict[str, tuple[float, list[str]]]]] = {
    "Beauty": (
        ["Rose", "Nude", "Coral", "Berry", "Ivory", "Amber"],
        ["Hydrating", "Matte", "Radiant", "Gentle", "Long-Lasting", "Nourishing"],
        {
            "Skin Care": (24.0, ["Face Serum", "Night Cream", "Cleanser", "Eye Gel", "Sheet Mask"]),
            "Makeup": (14.0, ["Lipstick", "Mascara", "Foundation", "Blush", "Eyeliner"]),
            "Hair Care": (11.0, ["Shampoo", "Conditioner", "Hair Oil", "Styling Cream"]),
            "Fragrance": (48.0, ["Eau de Parfum", "Body Mist", "Cologne", "Perfume Oil"]),
        },
    ),
    "Electronics": (
        ["Black", "Silver", "White", "Graphite", "Blue", "Aluminium"],
        ["Wireless", "Compact", "Fast-Charging", "Noise-Cancelling", "Portable", "Smart"],
        {
            "Audio": (59.0, ["Headphones", "Earbuds", "Bluetooth Speaker", "Soundbar"]),
            "Phone Accessories": (15.0, ["Phone Case", "USB-C Cable", "Power Bank", "Car Mount"]),
            "Computer Accessories": (29.0, ["Keyboard", "Mouse", "Webcam", "Laptop Stand", "USB Hub"]),
            "Wearables": (129.0, ["Smartwatch", "Fitness Tracker", "Watch Strap"]),
        },
    ),
    "Home & Kitchen": (
        ["Oak", "Stainless Steel", "Ceramic", "Bamboo", "Cast Iron", "Linen"],
        ["Non-Stick", "Stackable", "Handmade", "Minimalist", "Heavy-Duty", "Dishwasher-Safe"],
        {
            "Cookware": (45.0, ["Frying Pan", "Saucepan", "Dutch Oven", "Wok"]),
            "Tableware": (22.0, ["Dinner Plate Set", "Mug", "Serving Bowl", "Glass Tumbler"]),
            "Bedding": (39.0, ["Duvet Cover", "Pillowcase Set", "Throw Blanket", "Fitted Sheet"]),
            "Storage": (18.0, ["Storage Box", "Spice Rack", "Drawer Organiser", "Food Container"]),
        },
    ),
    "Fashion": (
        ["Navy", "Olive", "Charcoal", "Cream", "Burgundy", "Denim"],
        ["Slim-Fit", "Relaxed", "Waterproof", "Organic", "Lightweight", "Classic"],
        {
            "Tops": (25.0, ["T-Shirt", "Shirt", "Hoodie", "Sweater"]),
            "Bottoms": (42.0, ["Jeans", "Chinos", "Joggers", "Skirt"]),
            "Shoes": (69.0, ["Sneakers", "Ankle Boots", "Loafers", "Sandals"]),
            "Bags": (55.0, ["Backpack", "Tote Bag", "Crossbody Bag", "Wallet"]),
        },
    ),
    "Sports": (
        ["Neon", "Black", "Teal", "Orange", "Grey", "Camo"],
        ["Breathable", "Ultralight", "Adjustable", "Quick-Dry", "Padded", "Reflective"],
        {
            "Fitness": (30.0, ["Yoga Mat", "Resistance Bands", "Kettlebell", "Jump Rope"]),
            "Running": (85.0, ["Running Shoes", "Running Vest", "Sports Socks", "Hydration Belt"]),
            "Cycling": (40.0, ["Bike Helmet", "Bike Light", "Cycling Gloves", "Water Bottle"]),
            "Outdoor": (60.0, ["Tent", "Sleeping Bag", "Hiking Poles", "Headlamp"]),
        },
    ),
    "Grocery": (
        ["Organic", "Vanilla", "Dark", "Mint", "Honey", "Sea Salt"],
        ["Fair-Trade", "Gluten-Free", "Roasted", "Sugar-Free", "Family-Size", "Artisan"],
        {
            "Coffee & Tea": (9.0, ["Ground Coffee", "Coffee Beans", "Green Tea", "Herbal Tea"]),
            "Snacks": (4.0, ["Granola Bar", "Trail Mix", "Crackers", "Chocolate Bar"]),
            "Pantry": (6.0, ["Olive Oil", "Pasta", "Peanut Butter", "Rice"]),
            "Beverages": (3.5, ["Sparkling Water", "Juice", "Energy Drink", "Kombucha"]),
        },
    ),
}
# department -> the relation from an item to the attribute of its title (the first word list above)
ATTRIBUTE_RELATION = {
    "Beauty": "shade",
    "Electronics": "colour",
    "Home & Kitchen": "material",
    "Fashion": "colour",
    "Sports": "colour",
    "Grocery": "flavour",
}
_SYLLABLES = np.array(
    ["lu", "mo", "ra", "ve", "ki", "no", "sa", "ta", "zen", "or", "el", "vi", "ka", "mi", "do", "fi"]
)


@dataclass(frozen=True)
class ShopSpec:
    """What to generate: sizes, seed, and the time window (``days`` ending at ``end``)."""

    users: int
    items: int
    seed: int = 7
    days: int = 90
    end: date = DEFAULT_END


@dataclass(frozen=True)
class ShopSummary:
    """What :func:`generate_shop` wrote."""

    folder: Path
    events: int
    counts: dict[str, int]
    triples: int
    bots: list[str]
    seconds: float

    @property
    def events_per_second(self) -> float:
        """Events generated and written per second."""
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class _Catalogue:
    leaf: np.ndarray  # leaf index per item
    brand: np.ndarray  # brand index per item
    price: np.ndarray
    weight: np.ndarray  # popularity weight per item
    leaf_names: list[str]
    leaf_department: list[str]
    brand_names: list[str]
    titles: np.ndarray
    attribute: np.ndarray  # index into the department's attribute list, per item
    feature: np.ndarray  # index into the department's adjective list, per item

    @property
    def leaf_dept(self) -> np.ndarray:
        """The department index of each leaf."""
        names = list(DEPARTMENTS)
        return np.array([names.index(d) for d in self.leaf_department])


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct, pronounceable brand names (2-3 syllables)."""
    names: dict[str, None] = {}
    while len(names) < n:
        parts = rng.choice(_SYLLABLES, size=(2 * n, 3))
        short = rng.random(2 * n) < 0.5
        words = np.where(
            short,
            np.char.add(parts[:, 0], parts[:, 1]),
            np.char.add(np.char.add(parts[:, 0], parts[:, 1]), parts[:, 2]),
        )
        for word in words:
            names.setdefault(str(word).capitalize(), None)
    return list(names)[:n]


def _catalogue(rng: np.random.Generator, n_items: int) -> _Catalogue:
    leaves = [(dept, leaf) for dept, (_, _, subs) in DEPARTMENTS.items() for leaf in subs]
    leaf_names = [leaf for _, leaf in leaves]
    leaf_department = [dept for dept, _ in leaves]
    dept_index = {dept: i for i, dept in enumerate(DEPARTMENTS)}
    leaf_dept = np.array([dept_index[d] for d in leaf_department])

    leaf = rng.choice(len(leaves), size=n_items, p=rng.dirichlet(np.full(len(leaves), 4.0)))
    # Zipf popularity: a random permutation of ranks 1..n
    rank = rng.permutation(n_items) + 1
    weight = rank.astype(np.float64) ** -POPULARITY_EXPONENT

    n_brands = int(np.clip(n_items // 25, 2 * len(DEPARTMENTS), 3_000))
    brand_names = _brand_names(rng, n_brands)
    brand_dept = np.arange(n_brands) % len(DEPARTMENTS)
    # brands within a department: Zipf shares, so a few brands make most products
    brand_share = (np.arange(n_brands) // len(DEPARTMENTS) + 1.0) ** -0.8
    brand = np.empty(n_items, dtype=np.int64)
    item_dept = leaf_dept[leaf]
    for d in range(len(DEPARTMENTS)):
        members = np.flatnonzero(brand_dept == d)
        mine = np.flatnonzero(item_dept == d)
        share = brand_share[members] / brand_share[members].sum()
        brand[mine] = rng.choice(members, size=mine.size, p=share)

    medians = np.array([subs[leaf_name][0] for _, (_, _, subs) in DEPARTMENTS.items() for leaf_name in subs])
    brand_premium = rng.lognormal(0.0, 0.3, n_brands)
    price = medians[leaf] * brand_premium[brand] * rng.lognormal(0.0, 0.45, n_items)
    price = np.maximum(np.floor(price) + 0.99, 0.99)

    titles = np.empty(n_items, dtype=object)
    attribute = np.zeros(n_items, dtype=np.int64)
    feature = np.zeros(n_items, dtype=np.int64)
    for li, (dept, leaf_name) in enumerate(leaves):
        colours, adjectives, subs = DEPARTMENTS[dept]
        nouns = subs[leaf_name][1]
        mine = np.flatnonzero(leaf == li)
        feature[mine] = rng.integers(0, len(adjectives), mine.size)
        attribute[mine] = rng.integers(0, len(colours), mine.size)
        adjective = np.array(adjectives)[feature[mine]]
        colour = np.array(colours)[attribute[mine]]
        noun = np.array(nouns)[rng.integers(0, len(nouns), mine.size)]
        brand_part = np.array(brand_names, dtype=object)[brand[mine]]
        titles[mine] = (
            brand_part
            + " "
            + adjective.astype(object)
            + " "
            + colour.astype(object)
            + " "
            + (noun.astype(object))
        )
    return _Catalogue(
        leaf, brand, price, weight, leaf_names, leaf_department, brand_names, titles, attribute, feature
    )


def _segment_positions(lengths: np.ndarray) -> np.ndarray:
    """0, 1, ... within each segment of ``lengths`` (concatenated)."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(int(lengths.sum())) - starts


def _weekly_days(
    rng: np.random.Generator, low: np.ndarray, high: np.ndarray, first_weekday: int
) -> np.ndarray:
    """A day in [low, high) per row, thinned so weekdays follow :data:`WEEKLY`."""
    day = np.empty(low.size, dtype=np.int64)
    todo = np.arange(low.size)
    while todo.size:
        candidate = low[todo] + np.floor(rng.random(todo.size) * (high[todo] - low[todo])).astype(np.int64)
        keep = rng.random(todo.size) < WEEKLY[(candidate + first_weekday) % 7] / WEEKLY.max()
        day[todo[keep]] = candidate[keep]
        todo = todo[~keep]
    return day


def _stable_sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, keys[order])`` with ``order = np.argsort(keys, kind="stable")``, for integer keys.

    Each key and its position are packed into one int64 and the packed values sorted: numpy sorts
    plain integers with SIMD, several times faster than its merge-sort argsort. The position breaks
    ties, so the order is the stable one. Falls back to argsort when the two do not fit in 63 bits.
    """
    n = keys.size
    if n == 0:
        return np.empty(0, dtype=np.int64), keys.copy()
    low = int(keys.min())
    shift = max(n - 1, 1).bit_length()
    if (int(keys.max()) - low).bit_length() + shift > 62:
        order = np.argsort(keys, kind="stable")
        return order, keys[order]
    packed = keys.astype(np.int64)  # in place from here: fresh arrays cost page faults
    packed -= low
    packed <<= shift
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    order = packed & ((1 << shift) - 1)
    packed >>= shift
    packed += low
    return order, packed.astype(keys.dtype, copy=False)


def _guided_search(cdf: np.ndarray, queries: np.ndarray, cells: int) -> np.ndarray:
    """``np.searchsorted(cdf, queries, side="left")`` for queries in ``[0, cdf[-1])``, through a guide table.

    The range is cut into ``cells`` equal cells, and each cell's answers at its two edges are
    looked up once. A query whose cell holds no value of ``cdf`` has its answer there; only the
    others are searched. Binary searches of random queries are slow (each step a mispredicted
    branch), and with about four cells per value most queries need none.
    """
    edges = np.arange(cells + 1) * (float(cdf[-1]) / cells)
    at_edge = np.searchsorted(cdf, edges, side="left")
    cell = np.minimum((queries * (cells / float(cdf[-1]))).astype(np.int64), cells - 1)
    found = at_edge[cell]
    # rounding can put a query just outside its computed cell: those are searched too
    outside = (queries < edges[cell]) | (queries >= edges[cell + 1])
    unsure = np.flatnonzero((found != at_edge[cell + 1]) | outside)
    found[unsure] = np.searchsorted(cdf, queries[unsure], side="left")
    return found


def _sample_items(
    rng: np.random.Generator, item_group: np.ndarray, weight: np.ndarray, n_groups: int, groups: np.ndarray
) -> np.ndarray:
    """One item per entry of ``groups``, in proportion to ``weight`` within that group (none empty).

    ``item_group`` is each item's group in ``[0, n_groups)``: a leaf, or a (leaf, attribute) pair.
    """
    order, group_sorted = _stable_sort(item_group)
    w = weight[order]
    totals = np.bincount(group_sorted, weights=w, minlength=n_groups)
    sizes = np.bincount(group_sorted, minlength=n_groups)
    within = np.cumsum(w) - np.repeat(np.cumsum(totals) - totals, sizes)
    # each group's cumulative weights scaled to (group, group + 1]: one searchsorted serves them all
    scaled = group_sorted + within / totals[group_sorted]
    pick = _guided_search(scaled, groups + rng.random(groups.size), 4 * scaled.size)
    return order[np.minimum(pick, order.size - 1)]


def _events(rng: np.random.Generator, spec: ShopSpec, cat: _Catalogue) -> dict[str, np.ndarray]:
    n_leaves = len(cat.leaf_names)
    leaf_weight = np.bincount(cat.leaf, weights=cat.weight, minlength=n_leaves)
    leaf_p = leaf_weight / leaf_weight.sum()
    window_s = spec.days * 86_400
    start_s = int(datetime(spec.end.year, spec.end.month, spec.end.day, tzinfo=UTC).timestamp()) - window_s
    first_weekday = datetime.fromtimestamp(start_s, UTC).weekday()

    # users: active span inside the window, two favourite leaves (drift from the first to the second)
    u = spec.users
    span_start = rng.random(u) * 0.8
    span_end = np.minimum(span_start + 0.2 + rng.random(u) * 0.8, 1.0)
    fav = rng.choice(n_leaves, size=(u, 2), p=leaf_p)
    activity = rng.lognormal(-0.32, 0.8, u)  # mean 1
    n_sessions = 1 + rng.poisson((MEAN_SESSIONS_PER_USER - 1) * activity)

    s_user = np.repeat(np.arange(u), n_sessions)
    frac = span_start[s_user] + rng.random(s_user.size) * (span_end - span_start)[s_user]
    low = np.floor(span_start[s_user] * spec.days).astype(np.int64)
    high = np.maximum(np.ceil(span_end[s_user] * spec.days).astype(np.int64), low + 1)
    day = _weekly_days(rng, low, np.minimum(high, spec.days), first_weekday)
    hour = rng.choice(24, size=s_user.size, p=HOURLY / HOURLY.sum())
    s_start = start_s + day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, s_user.size)
    drift = (frac - span_start[s_user]) / (span_end - span_start)[s_user]
    s_leaf = np.where(rng.random(s_user.size) < drift, fav[s_user, 1], fav[s_user, 0])
    n_views = rng.geometric(1.0 / MEAN_VIEWS_PER_SESSION, s_user.size)

    # views
    v_session = np.repeat(np.arange(s_user.size), n_views)
    v_leaf = s_leaf[v_session]
    wander = rng.random(v_session.size) < P_WANDER
    v_leaf[wander] = rng.choice(n_leaves, size=int(wander.sum()), p=leaf_p)
    # taste: a share of the on-category views go to the user's favourite attribute of the department.
    # Groups [0, n_leaves) are the leaves; then one group per (leaf, attribute): an item is in two,
    # so one draw serves both kinds of view.
    n_attributes = max(len(colours) for colours, _, _ in DEPARTMENTS.values())
    taste = rng.integers(0, n_attributes, (u, len(DEPARTMENTS)))
    attribute_group = n_leaves + cat.leaf * n_attributes + cat.attribute
    n_groups = n_leaves * (1 + n_attributes)
    stocked = np.bincount(attribute_group, minlength=n_groups) > 0
    v_user = s_user[v_session]
    wanted = n_leaves + v_leaf * n_attributes + taste[v_user, cat.leaf_dept[v_leaf]]
    tasteful = ~wander & (rng.random(v_session.size) < P_TASTE) & stocked[wanted]
    picked = _sample_items(
        rng,
        np.concatenate([cat.leaf, attribute_group]),
        np.concatenate([cat.weight, cat.weight]),
        n_groups,
        np.where(tasteful, wanted, v_leaf),
    )
    v_item = picked % cat.leaf.size
    gaps = rng.exponential(35.0, v_session.size).astype(np.int64) + 2
    position = _segment_positions(n_views)
    gaps[position == 0] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[np.cumsum(n_views) - n_views], n_views)
    v_ts = s_start[v_session] + elapsed
    session_end = v_ts[np.cumsum(n_views) - 1]

    # funnel: cheaper items are carted more often; the mean stays near P_CART
    price_factor = ((np.median(cat.price) / cat.price) ** 0.25)[v_item]
    p_cart = np.clip(P_CART * price_factor / np.mean(price_factor), 0.0, 0.5)
    carted = rng.random(v_session.size) < p_cart
    c_idx = np.flatnonzero(carted)
    c_ts = v_ts[c_idx] + 5 + rng.integers(0, 40, c_idx.size)
    bought = rng.random(c_idx.size) < P_PURCHASE_GIVEN_CART
    p_idx = c_idx[bought]
    p_ts = session_end[v_session[p_idx]] + 60 + rng.integers(0, 120, p_idx.size)
    removed = c_idx[~bought][rng.random(int((~bought).sum())) < P_REMOVE_GIVEN_ABANDONED]
    r_ts = session_end[v_session[removed]] + 20 + rng.integers(0, 60, removed.size)

    # bots: crawlers viewing random items, hundreds per minute, for a few minutes
    n_bots = max(1, u // USERS_PER_BOT)
    bot_minutes = rng.integers(2, 6, n_bots)
    bot_rate = rng.integers(200, 500, n_bots)  # views per minute
    bot_events = bot_minutes * bot_rate
    b_user = np.repeat(u + np.arange(n_bots), bot_events)
    b_start = start_s + rng.integers(0, window_s - 3_600, n_bots)
    b_ts = np.repeat(b_start, bot_events) + _segment_positions(bot_events) * 60 // np.repeat(
        bot_rate, bot_events
    )
    b_item = rng.integers(0, cat.leaf.size, b_user.size)

    parts = [
        (v_user, v_item, v_ts, VIEW),
        (v_user[c_idx], v_item[c_idx], c_ts, CART),
        (v_user[removed], v_item[removed], r_ts, REMOVE),
        (v_user[p_idx], v_item[p_idx], p_ts, PURCHASE),
        (b_user, b_item, b_ts, VIEW),
    ]
    user = np.concatenate([p[0] for p in parts])
    item = np.concatenate([p[1] for p in parts])
    ts = np.concatenate([p[2] for p in parts])
    kind = np.concatenate([np.full(p[0].size, p[3], dtype=np.int8) for p in parts])
    session = np.concatenate([v_session, v_session[c_idx], v_session[removed], v_session[p_idx], -1 - b_user])
    order, ts = _stable_sort(ts)
    return {
        "user": user[order],
        "item": item[order],
        "ts": ts,
        "type": kind[order],
        "session": session[order],
        "n_bots": np.array([n_bots]),
    }


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """ASCII digits of non-negative integers, zero-padded to ``width``: an (n, width) uint8 array."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values.astype(np.int64)[:, None] // powers) % 10 + 48).astype(np.uint8)


def _id_width(n: int) -> int:
    return max(len(str(max(n - 1, 0))), 1)


def _user_ids(indices: np.ndarray, n: int) -> list[str]:
    width = _id_width(n)
    return [f"u{i:0{width}d}" for i in indices.tolist()]


def _item_ids(n: int) -> np.ndarray:
    width = _id_width(n)
    return np.array([f"p{i:0{width}d}" for i in range(n)], dtype=object)


def _write_interactions(path: Path, events: dict[str, np.ndarray], n_users: int, n_items: int) -> None:
    """Write the events as CSV, assembled in one byte buffer of fixed-width rows (no per-row Python).

    Every field is copied from a small table of preformatted bytes (ids, five-digit halves of the
    timestamp, type names padded with zero bytes) as one item per row; the zero bytes are dropped
    at the end.
    """
    n = events["ts"].size
    ts = events["ts"]
    names = np.zeros((len(EVENT_TYPES), max(map(len, EVENT_TYPES))), dtype=np.uint8)
    for i, name in enumerate(EVENT_TYPES):
        names[i, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
    halves = _digits(np.arange(100_000), 5)  # timestamps have ten digits until 2286
    layout: list[bytes | tuple[np.ndarray, np.ndarray]] = [
        b"u",
        (_digits(np.arange(n_users), _id_width(n_users)), events["user"]),
        b",p",
        (_digits(np.arange(n_items), _id_width(n_items)), events["item"]),
        b",",
        (halves, ts // 100_000),
        (halves, ts % 100_000),
        b",",
        (names, events["type"]),
        b",\n",
    ]
    template = b"".join(part if isinstance(part, bytes) else bytes(part[0].shape[1]) for part in layout)
    rows = np.empty((n, len(template)), dtype=np.uint8)
    rows[:] = np.frombuffer(template, dtype=np.uint8)
    offset = 0
    for part in layout:
        if isinstance(part, bytes):
            offset += len(part)
            continue
        table, index = part
        width = table.shape[1]
        field = np.dtype(
            {"names": ["f"], "formats": [f"V{width}"], "offsets": [offset], "itemsize": len(template)}
        )
        rows.view(field).ravel()["f"] = np.ascontiguousarray(table).view(f"V{width}").ravel()[index]
        offset += width
    flat = rows.ravel()
    with path.open("wb") as handle:
        handle.write(b"user_id,item_id,ts,type,value\n")
        handle.write(flat[flat != 0].tobytes())


def _top_pairs(heads: np.ndarray, tails: np.ndarray, n_items: int, min_count: int) -> np.ndarray:
    """Distinct (head, tail) pairs seen at least ``min_count`` times, at most KNOWLEDGE_PER_ITEM per head."""
    distinct = heads != tails
    key = np.concatenate(
        [heads[distinct] * n_items + tails[distinct], tails[distinct] * n_items + heads[distinct]]
    )
    if key.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    pairs, counts = np.unique(key, return_counts=True)
    pairs, counts = pairs[counts >= min_count], counts[counts >= min_count]
    if pairs.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    head, tail = pairs // n_items, pairs % n_items
    # by head, then count (descending), then tail: one sort of packed integers where they fit
    top = int(counts.max()) + 1
    if n_items * n_items * top < 1 << 62:
        ranked = np.sort((head * top + (top - 1 - counts)) * n_items + tail)
        head, tail = ranked // (top * n_items), ranked % n_items
    else:
        order = np.lexsort((tail, -counts, head))
        head, tail = head[order], tail[order]
    rank = _segment_positions(np.bincount(head, minlength=n_items)[np.unique(head)])
    keep = rank < KNOWLEDGE_PER_ITEM
    return np.stack([head[keep], tail[keep]], axis=1)


def _adjacent(events: dict[str, np.ndarray], kind: int, by: str) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive ``kind`` events of the same ``by`` (user or session), as (earlier, later) items."""
    mask = events["type"] == kind
    group, item = events[by][mask], events["item"][mask]
    order, group = _stable_sort(group)  # events are already in time order
    item = item[order]
    same = group[1:] == group[:-1]
    return item[:-1][same], item[1:][same]


def _knowledge(events: dict[str, np.ndarray], n_items: int) -> dict[str, np.ndarray]:
    humans = {k: v[events["session"] >= 0] for k, v in events.items() if k != "n_bots"}
    return {
        "also_bought": _top_pairs(*_adjacent(humans, PURCHASE, "user"), n_items, 1),
        "bought_together": _top_pairs(*_adjacent(humans, PURCHASE, "session"), n_items, 1),
        "also_viewed": _top_pairs(*_adjacent(humans, VIEW, "session"), n_items, 2),
    }


def event_links(folder: Path, held_out: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """The shop's :data:`EVENT_RELATIONS` triples rebuilt without any event of a held-out (user, item) pair.

    ``kg_triples.csv`` derives them from every event, so a split that holds pairs out for testing
    would train on co-occurrences counted from its test events. The events (with their sessions
    and bot flags, which the files do not keep) are generated again from ``demo_shop.json``'s spec;
    the links are those the generator makes from the events of the other pairs.
    """
    manifest = json.loads((Path(folder) / "demo_shop.json").read_text(encoding="utf-8"))
    spec = ShopSpec(**{**manifest["spec"], "end": date.fromisoformat(manifest["spec"]["end"])})
    rng = np.random.default_rng(spec.seed)
    events = _events(rng, spec, _catalogue(rng, spec.items))
    if int(events["ts"].size) != manifest["events"]:
        raise ValueError(f"{folder}: its spec makes {events['ts'].size} events, not {manifest['events']}")
    n_bots = int(events["n_bots"][0])
    users = {u: k for k, u in enumerate(_user_ids(np.arange(spec.users + n_bots), spec.users + n_bots))}
    item_ids = _item_ids(spec.items)
    items = {i: k for k, i in enumerate(item_ids.tolist())}
    held = np.array(
        [users[u] * spec.items + items[i] for u, i in held_out if u in users and i in items], dtype=np.int64
    )
    keep = ~np.isin(events["user"].astype(np.int64) * spec.items + events["item"], held)
    kept = {k: v if k == "n_bots" else v[keep] for k, v in events.items()}
    return [
        (item_ids[head], relation, item_ids[tail])
        for relation, pairs in _knowledge(kept, spec.items).items()
        for head, tail in pairs.tolist()
    ]


def _write_catalogue(folder: Path, cat: _Catalogue, item_ids: np.ndarray) -> None:
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "brand", "categories", "title", "price"])
        dept = np.array(cat.leaf_department, dtype=object)[cat.leaf]
        leaf = np.array(cat.leaf_names, dtype=object)[cat.leaf]
        brand = np.array(cat.brand_names, dtype=object)[cat.brand]
        price = [f"{p:.2f}" for p in cat.price.tolist()]
        writer.writerows(zip(item_ids, brand, dept + "|" + leaf, cat.titles, price, strict=True))


def _attribute_entities(cat: _Catalogue) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str, str]]]:
    """Each item's attribute and feature entity ids, and every entity as (entity_id, kind, name).

    An entity id is ``relation:word`` ("colour:Black"), so that a word in two roles (Grocery's
    flavour "Organic", Fashion's feature "Organic") names two entities; its kind is the relation.
    """
    departments = cat.leaf_department
    leaf_attribute = [[f"{ATTRIBUTE_RELATION[d]}:{w}" for w in DEPARTMENTS[d][0]] for d in departments]
    leaf_feature = [[f"{FEATURE}:{w}" for w in DEPARTMENTS[d][1]] for d in departments]
    attribute = np.array(leaf_attribute, dtype=object)[cat.leaf, cat.attribute]
    feature = np.array(leaf_feature, dtype=object)[cat.leaf, cat.feature]
    entities = dict.fromkeys(eid for row in leaf_attribute + leaf_feature for eid in row)
    return attribute, feature, [(eid, *eid.split(":", 1)) for eid in entities]


def _write_triples(folder: Path, cat: _Catalogue, item_ids: np.ndarray, links: dict[str, np.ndarray]) -> int:
    brand = np.array(cat.brand_names, dtype=object)[cat.brand]
    leaf = np.array(cat.leaf_names, dtype=object)[cat.leaf]
    attribute, feature, entities = _attribute_entities(cat)
    lines = ["head,relation,tail"]
    lines += (item_ids + ",produced_by," + brand).tolist()
    lines += (item_ids + ",belongs_to," + leaf).tolist()  # no vocabulary word holds a comma
    attribute_relation = np.array([ATTRIBUTE_RELATION[d] for d in cat.leaf_department], dtype=object)
    lines += (item_ids + "," + attribute_relation[cat.leaf] + "," + attribute).tolist()
    lines += (item_ids + f",{FEATURE}," + feature).tolist()
    with (folder / "entities.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["entity_id", "kind", "name"])
        writer.writerows(entities)
    for relation, pairs in links.items():
        lines += (item_ids[pairs[:, 0]] + f",{relation}," + item_ids[pairs[:, 1]]).tolist()
    (folder / "kg_triples.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines) - 1


def generate_shop(spec: ShopSpec, folder: Path) -> ShopSummary:
    """Write a synthetic shop for ``spec`` into ``folder`` (created if needed); deterministic per spec."""
    if spec.users < 1 or spec.items < 1 or spec.days < 1:
        raise ValueError("users, items and days must be at least 1")
    started = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    cat = _catalogue(rng, spec.items)
    events = _events(rng, spec, cat)
    n_bots = int(events["n_bots"][0])
    _write_interactions(folder / "interactions.csv", events, spec.users + n_bots, spec.items)
    item_ids = _item_ids(spec.items)
    _write_catalogue(folder, cat, item_ids)
    triples = _write_triples(folder, cat, item_ids, _knowledge(events, spec.items))
    counts = {name: int(np.count_nonzero(events["type"] == i)) for i, name in enumerate(EVENT_TYPES)}
    bots = _user_ids(spec.users + np.arange(n_bots), spec.users + n_bots)
    manifest = {
        "generator": "kgrec.demo_shop",
        "spec": {**asdict(spec), "end": spec.end.isoformat()},
        "events": int(events["ts"].size),
        "counts": counts,
        "triples": triples,
        "bots": bots,
        "targets": {
            "p_cart_given_view": P_CART,
            "p_purchase_given_cart": P_PURCHASE_GIVEN_CART,
            "popularity_exponent": POPULARITY_EXPONENT,
        },
    }
    (folder / "demo_shop.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return ShopSummary(folder, int(events["ts"].size), counts, triples, bots, time.perf_counter() - started)
