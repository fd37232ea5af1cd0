"""kgrec graph schema: the graph model allow-list and the catalogue of every Cypher statement."""

from graph_schema.allow_list import Label, Rel
from graph_schema.catalogue import Statement, all_statements

__all__ = ["Label", "Rel", "Statement", "all_statements"]
