"""MovieLens ml-latest-small (ratings.csv, movies.csv) as a kgrec data set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kgrec.datasets import records
from kgrec.datasets.records import InteractionRecord, ItemRecord, Problems, TripleRecord

NO_GENRE = "(no genres listed)"


def _rating(row: dict[str, str]) -> InteractionRecord:
    records.check_ids(("userId", row["userId"]), ("movieId", row["movieId"]))
    try:
        ts = int(row["timestamp"]) * 1000
        value = float(row["rating"])
    except ValueError:
        raise records.BadRow("rating or timestamp is not a number") from None
    return InteractionRecord(row["userId"], row["movieId"], "rating", ts=ts, value=value)


def _movie(row: dict[str, str]) -> ItemRecord:
    genres = tuple(g for g in row["genres"].split("|") if g and g != NO_GENRE)
    records.check_ids(("movieId", row["movieId"]), *(("genres", g) for g in genres))
    return ItemRecord(row["movieId"], title=row["title"], categories=genres)


class MovieLensDataset:
    """Ratings become ``rating`` interactions (value = stars); genres become categories."""

    name = "movielens"
    # Many people enter their past ratings at sign-up, hundreds a minute: that is not a bot.
    flags_bots = False

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.problems = Problems()
        if not (self.folder / "ratings.csv").exists():
            raise FileNotFoundError(f"{self.folder}: no ratings.csv")

    def interactions(self) -> Iterator[InteractionRecord]:
        """One rating interaction per row of ratings.csv."""
        path = self.folder / "ratings.csv"
        yield from records.parsed_rows(
            path, ("userId", "movieId", "rating", "timestamp"), self.problems, _rating
        )

    def items(self) -> Iterator[ItemRecord]:
        """Movies with their titles and genres."""
        yield from records.parsed_rows(
            self.folder / "movies.csv", ("movieId", "title", "genres"), self.problems, _movie
        )

    def triples(self) -> Iterator[TripleRecord]:
        """MovieLens has no item–item knowledge graph."""
        return iter(())
