"""MovieLens ml-latest-small (ratings.csv, movies.csv, tags.csv) as a kgrec data set.

Genres stay categories. Each row of ``tags.csv`` becomes a ``has_tag`` triple from the
movie to a tag entity ``tag:<tag>`` (the tag lower-cased, white space collapsed, format
characters left out: :func:`tag_entity_id`, so "Dark  Comedy" and "dark comedy" are one
entity, kind ``tag``, named by its first spelling), and the triple keeps who tagged and when
(``user_id``, ``ts``): a tag is knowledge a user gives, and the evaluation split drops what a
test user stated at or after their held-out rating.

A movie's release year, the ``(1995)`` that ends its title, becomes a ``released_in``
triple to a year entity ``year:1995`` (kind ``year``). It is catalogue knowledge (no
user, no time). Movies released the same year are rated in the same years, so the
year tells the graph model and the ``shared_entities`` signal which films belong to a
user's current stretch of ratings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from kgrec.datasets import records
from kgrec.datasets.records import EntityRecord, InteractionRecord, ItemRecord, Problems, TripleRecord
from kgrec.events.ingest import normalised_tag
from kgrec.events.validation import ValidationClock
from kgrec.field_types import shown
from kgrec.limits import without_format_characters

NO_GENRE = "(no genres listed)"
TAG_RELATION = "has_tag"
TAG_KIND = "tag"
TAG_PREFIX = "tag:"
YEAR_RELATION = "released_in"
YEAR_KIND = "year"
YEAR_PREFIX = "year:"
# The year in parentheses at the end of a title; "(2006-2007)" series and titles without one get none.
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")


def release_year(title: str) -> str | None:
    """The four-digit year that ends a MovieLens title in parentheses, or None."""
    match = _TITLE_YEAR.search(title)
    return match.group(1) if match else None


def tag_entity_id(tag: str) -> str | None:
    """The entity id of a tag: ``tag:`` + the tag as a tag event's ``Tag`` node has it
    (:func:`kgrec.events.ingest.normalised_tag`: lower case, NFC, no soft hyphens or word joiners,
    words split at other invisible characters and joined by one space) without the format characters
    it keeps inside words (the joiners of an emoji sequence), which the id rule refuses: kgrec makes
    this id, so it makes a valid one.
    None when the tag has nothing visible."""
    words = without_format_characters(normalised_tag(tag))
    return TAG_PREFIX + words if words else None


def _timestamp_ms(row: dict[str, str]) -> int:
    """The row's ``timestamp`` (whole Unix seconds) in epoch milliseconds, or BadRow."""
    ts = records.whole_seconds_ms(row["timestamp"])
    if ts is None:
        raise records.BadRow(f"timestamp {row['timestamp'][:40]!r} is not a whole number")
    return ts


def _tag(row: dict[str, str], clock: ValidationClock | None = None) -> tuple[TripleRecord, str]:
    """A tags.csv row as its ``has_tag`` triple (with who and when) and the tag's first spelling."""
    user_id, movie_id, text = row["userId"].strip(), row["movieId"].strip(), " ".join(row["tag"].split())
    if not text:
        raise records.BadRow("tag is empty")
    entity_id = tag_entity_id(text)
    if entity_id is None:
        raise records.BadRow(f"tag {shown(text)} has no visible character")
    records.check_ids(("userId", user_id), ("movieId", movie_id), ("tag", entity_id))
    ts = _timestamp_ms(row)
    records.check_time("timestamp", row["timestamp"], ts, clock)
    return TripleRecord(movie_id, TAG_RELATION, entity_id, user_id=user_id, ts=ts), text


def _rating(row: dict[str, str], clock: ValidationClock | None = None) -> InteractionRecord:
    records.check_ids(("userId", row["userId"]), ("movieId", row["movieId"]))
    ts = _timestamp_ms(row)
    try:
        value = float(row["rating"])
    except ValueError:
        raise records.BadRow(f"rating {row['rating'][:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise records.BadRow(f"rating {row['rating'][:40]!r} is not a finite number")
    records.check_field("value", value)
    records.check_time("timestamp", row["timestamp"], ts, clock)
    return InteractionRecord(row["userId"], row["movieId"], "rating", ts=ts, value=value)


def _movie(row: dict[str, str]) -> ItemRecord:
    genres = tuple(g for g in row["genres"].split("|") if g and g != NO_GENRE)
    records.check_ids(("movieId", row["movieId"]), *(("genres", g) for g in genres))
    records.check_field("title", row["title"] or None)
    return ItemRecord(row["movieId"], title=row["title"], categories=genres)


class MovieLensDataset:
    """Ratings become ``rating`` interactions (value = stars); genres categories; release years
    ``released_in`` triples; tags ``has_tag`` triples."""

    name = "movielens"
    # Many people enter their past ratings at sign-up, hundreds a minute: that is not a bot.
    flags_bots = False

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.problems = Problems()
        # the import's clock (kgrec.importer.prepare sets it): a time further ahead is refused
        self.clock: ValidationClock | None = None
        if not (self.folder / "ratings.csv").exists():
            raise FileNotFoundError(f"{self.folder}: no ratings.csv")

    def interactions(self) -> Iterator[InteractionRecord]:
        """One rating interaction per row of ratings.csv."""
        path = self.folder / "ratings.csv"
        yield from records.parsed_rows(
            path,
            ("userId", "movieId", "rating", "timestamp"),
            self.problems,
            partial(_rating, clock=self.clock),
        )

    def _movies(self, problems: Problems) -> Iterator[ItemRecord]:
        columns = ("movieId", "title", "genres")
        yield from records.parsed_rows(self.folder / "movies.csv", columns, problems, _movie)

    def items(self) -> Iterator[ItemRecord]:
        """Movies with their titles and genres."""
        yield from self._movies(self.problems)

    def _tags(self, problems: Problems) -> Iterator[tuple[TripleRecord, str]]:
        path = self.folder / "tags.csv"
        if path.exists():
            parse = partial(_tag, clock=self.clock)
            yield from records.parsed_rows(path, ("userId", "movieId", "tag", "timestamp"), problems, parse)

    def _years(self) -> Iterator[tuple[str, str]]:
        """(movieId, release year) of each movie whose title ends with one; items() reports bad rows."""
        for item in self._movies(Problems()):
            year = release_year(item.title or "")
            if year is not None:
                yield item.item_id, year

    def triples(self) -> Iterator[TripleRecord]:
        """A ``released_in`` triple per dated movie, then a ``has_tag`` triple per row of tags.csv
        (none without the file), with user_id and ts."""
        for movie_id, year in self._years():
            yield TripleRecord(movie_id, YEAR_RELATION, YEAR_PREFIX + year)
        for triple, _ in self._tags(self.problems):
            yield triple

    def entities(self) -> Iterator[EntityRecord]:
        """Each release year once (kind ``year``), then each tag once (kind ``tag``), named by the
        spelling it first had in tags.csv."""
        seen: set[str] = set()
        for _, year in self._years():
            if YEAR_PREFIX + year not in seen:
                seen.add(YEAR_PREFIX + year)
                yield EntityRecord(YEAR_PREFIX + year, YEAR_KIND, year)
        for triple, text in self._tags(Problems()):  # triples() reports the bad rows
            if triple.tail not in seen:
                seen.add(triple.tail)
                yield EntityRecord(triple.tail, TAG_KIND, text)
