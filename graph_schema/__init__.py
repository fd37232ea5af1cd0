"""kgrec graph schema: the graph model allow-list and the catalogue of every Cypher statement."""

from graph_schema.catalogue import Statement, all_statements
from graph_schema.model import Label, Rel

__all__ = ["Label", "Rel", "Statement", "all_statements"]
