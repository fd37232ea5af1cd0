"""The README's "Graph model" section documents the whole allow-list: every label, relationship
type and property key a statement may use, so a user in Neo4j Browser finds each one explained."""

from __future__ import annotations

from pathlib import Path

from graph_schema.allow_list import PROPERTY_KEYS, Label, Rel

README = Path(__file__).resolve().parents[1] / "README.md"


def graph_model_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Graph model\n")
    return text[start : text.index("\n## ", start + 1)]


def test_every_label_relationship_type_and_property_key_is_documented() -> None:
    section = graph_model_section()
    assert [label.value for label in Label if f"(:{label.value})" not in section] == []
    assert [rel.value for rel in Rel if f"[:{rel.value}]" not in section] == []
    # a property is named in code font, alone (`price`) or with its value (`id: 'catalogue'`)
    assert [key for key in PROPERTY_KEYS if f"`{key}`" not in section and f"`{key}:" not in section] == []
