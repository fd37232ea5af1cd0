"""MovieLens ml-latest-small (ratings.csv, movies.csv) as a kgrec data set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kgrec.datasets.records import InteractionRecord, ItemRecord, Problems, TripleRecord, read_csv

NO_GENRE = "(no genres listed)"


class MovieLensDataset:
    """Ratings become ``rating`` interactions (value = stars); genres become categories."""

    name = "movielens"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.problems = Problems()
        if not (self.folder / "ratings.csv").exists():
            raise FileNotFoundError(f"{self.folder}: no ratings.csv")

    def interactions(self) -> Iterator[InteractionRecord]:
        """One rating interaction per row of ratings.csv."""
        path = self.folder / "ratings.csv"
        for line, row in read_csv(path, ("userId", "movieId", "rating", "timestamp"), self.problems):
            try:
                ts = int(row["timestamp"]) * 1000
                value = float(row["rating"])
            except ValueError:
                self.problems.add(path, line, "rating or timestamp is not a number")
                continue
            yield InteractionRecord(row["userId"], row["movieId"], "rating", ts=ts, value=value)

    def items(self) -> Iterator[ItemRecord]:
        """Movies with their titles and genres."""
        path = self.folder / "movies.csv"
        for _line, row in read_csv(path, ("movieId", "title", "genres"), self.problems):
            genres = tuple(g for g in row["genres"].split("|") if g and g != NO_GENRE)
            yield ItemRecord(row["movieId"], title=row["title"], categories=genres)

    def triples(self) -> Iterator[TripleRecord]:
        """MovieLens has no item–item knowledge graph."""
        return iter(())
