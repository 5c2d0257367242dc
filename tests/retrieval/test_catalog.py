"""The tool catalog: tau2 domains' tools, catalog files (bad rows refused by row), seeded nesting distractors."""

from __future__ import annotations

import json

import pytest

from agentlab.retrieval.catalog import (
    CatalogError,
    ToolCatalog,
    distractors,
    domain_tools,
    load_catalog_file,
    write_catalog_file,
)

GOOD = {
    "type": "function",
    "function": {
        "name": "lookup_invoice",
        "description": "Look up an invoice by id.",
        "parameters": {"type": "object", "properties": {"invoice_id": {"type": "string"}}},
    },
}


def _file(tmp_path, *rows: str):
    path = tmp_path / "billing.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_domain_tools_are_the_harness_schemas_with_domain_ids():
    airline = domain_tools("airline")
    assert len(airline) == 14 and "airline/cancel_reservation" in {t.id for t in airline}
    cancel = next(t for t in airline if t.name == "cancel_reservation")
    assert (
        "reservation_id" in cancel.parameters["properties"]
        and cancel.schema()["function"]["name"] == "cancel_reservation"
    )
    telecom = domain_tools("telecom")
    assert {t.side for t in telecom} == {"assistant", "user"}  # the phone's tools are in the catalog too
    assert all(t.id.startswith("telecom/user/") for t in telecom if t.side == "user")


def test_a_catalog_file_loads_bare_and_wrapped_schemas_with_their_domain(tmp_path):
    bare = {
        "name": "refund_invoice",
        "description": "Refund it.",
        "parameters": {"type": "object", "properties": {}},
        "domain": "finance",
    }
    tools = load_catalog_file(_file(tmp_path, json.dumps(GOOD), "", json.dumps(bare)))
    assert [t.id for t in tools] == ["billing/lookup_invoice", "finance/refund_invoice"]
    assert load_catalog_file(write_catalog_file(tools, tmp_path / "again.jsonl")) == tools


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("{not json", "row 2: Expecting property name"),
        (json.dumps({"function": {"name": "bad name!", "description": "x"}}), 'row 2: "name" must be 1-64 letters'),
        (
            json.dumps({"name": "t", "parameters": {"type": "array"}}),
            'row 2: "parameters" must be a JSON Schema object',
        ),
        (
            json.dumps({"name": "t", "parameters": {"type": "object", "properties": {"a": {"type": "strang"}}}}),
            'row 2: "parameters" is not a valid JSON Schema at properties/a/type',
        ),
        (json.dumps({"name": "t", "description": 3}), 'row 2: "description" must be a string'),
    ],
)
def test_a_bad_row_is_refused_naming_file_and_row(tmp_path, row, says):
    path = _file(tmp_path, json.dumps(GOOD), row)
    with pytest.raises(CatalogError) as err:
        load_catalog_file(path)
    assert str(path) in str(err.value) and says in str(err.value)


def test_an_empty_catalog_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="holds no tools"):
        load_catalog_file(_file(tmp_path, ""))
    with pytest.raises(CatalogError, match="the tool catalog is empty"):
        ToolCatalog(domains=[], files=[]).tools()


def test_a_repeated_tool_id_is_refused(tmp_path):
    path = _file(tmp_path, json.dumps(GOOD), json.dumps(GOOD))
    with pytest.raises(CatalogError, match="'billing/lookup_invoice' twice"):
        ToolCatalog(domains=[], files=[str(path)]).tools()


def test_distractors_are_seeded_nested_unique_look_alikes():
    real = domain_tools("airline") + domain_tools("retail")
    many = distractors(real, 300, seed=0)
    assert distractors(real, 300, seed=0) == many and distractors(real, 100, seed=0) == many[:100]
    assert distractors(real, 100, seed=1) != many[:100]
    ids = [t.id for t in real + many]
    assert len(set(ids)) == len(ids)
    assert not {t.domain for t in many} & {"airline", "retail"}
    assert all(t.description and t.parameters["type"] == "object" for t in many)
