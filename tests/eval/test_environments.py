"""Environments over a database parsed once per process: copies that never write the template, and tau2's hash."""

from __future__ import annotations

import contextlib
import copy
import pickle

import pytest
from tau2.registry import registry
from tau2.utils.utils import get_dict_hash

from agentlab.eval.domains import Tau2Domain
from agentlab.eval.environments import CopyOnRead, Template, clone, environment, shared_domain
from agentlab.models.oracle import gold_runs

DOMAINS = ("airline", "retail", "telecom", "mock")


def _tau2_hash(db) -> str:
    """tau2's own hash of a database (``ToolKitBase.get_db_hash``)."""
    return get_dict_hash(db.model_dump())


def _template_hash(domain: str) -> str:
    return _tau2_hash(shared_domain(domain).templates["db"].db)


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_fresh_environment_hashes_as_tau2s(domain: str) -> None:
    ours, theirs = environment(domain), registry.get_env_constructor(domain)()
    assert ours.get_db_hash() == theirs.get_db_hash() == _tau2_hash(ours.tools.db)
    assert ours.get_user_db_hash() == theirs.get_user_db_hash()
    assert ours.get_policy() == theirs.get_policy()
    assert [t.openai_schema for t in ours.get_tools()] == [t.openai_schema for t in theirs.get_tools()]


def test_clone_is_an_independent_equal_copy() -> None:
    db = shared_domain("airline").templates["db"].db
    flight = next(iter(dict.values(db.flights)))
    copied = clone(flight)
    assert copied == flight and copied.model_dump() == flight.model_dump() and copied is not flight
    first_date = next(iter(copied.dates))
    copied.dates[first_date] = None
    assert flight.dates[first_date] is not None


def test_records_are_copied_when_reached_and_the_template_never_changes() -> None:
    template = shared_domain("airline").templates["db"]
    before = _tau2_hash(template.db)
    env = environment("airline")
    users = env.tools.db.users
    assert isinstance(users, CopyOnRead) and users.shared == set(dict.keys(template.db.users))
    user_id = next(iter(users))
    user = users[user_id]
    assert user is not dict.__getitem__(template.db.users, user_id) and user_id not in users.shared
    user.reservations.append("NEW123")
    users.pop(next(k for k in users if k != user_id))
    users["someone_new"] = clone(user)
    del users[next(iter(users.shared))]
    assert _tau2_hash(template.db) == before
    assert env.get_db_hash() == _tau2_hash(env.tools.db) != before


def test_every_way_of_reaching_a_record_copies_it() -> None:
    template = dict.__getitem__(shared_domain("retail").templates["db"].db.__dict__, "users")
    for reach in (
        lambda d, k: d[k],
        lambda d, k: d.get(k),
        lambda d, k: dict(d.items())[k],
        lambda d, k: next(v for kk, v in zip(d.keys(), d.values(), strict=True) if kk == k),
        lambda d, k: d.setdefault(k),
        lambda d, k: d.copy()[k],
    ):
        records = CopyOnRead(template)
        key = next(iter(records))
        assert reach(records, key) is not template[key]


def test_a_copy_on_read_dict_deep_copies_and_pickles_as_a_plain_dict() -> None:
    template = {"a": shared_domain("mock").templates["db"].db.users["user_1"]}
    records = CopyOnRead(template)
    for copied in (copy.deepcopy(records), pickle.loads(pickle.dumps(records))):
        assert type(copied) is dict and copied == template and copied["a"] is not template["a"]


def test_read_only_tools_lend_the_shared_records() -> None:
    env = environment("airline")
    flights = env.tools.db.flights
    env.make_tool_call("search_direct_flight", origin="JFK", destination="LAX", date="2024-05-20")
    assert flights.shared == set(flights) and not flights.lending
    env.make_tool_call("get_user_details", user_id="mia_li_3668")
    assert env.tools.db.users.shared == set(env.tools.db.users)


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_hash_follows_every_change_and_repeats_from_the_memo(domain: str) -> None:
    """Gold calls of every base task change the database; each hash is tau2's, the second time from the memo."""
    tau2_domain = Tau2Domain(domain)
    tasks = tau2_domain.tasks("base" if "base" in tau2_domain.splits() else None)
    for _ in range(2):
        for task in tasks[:15]:
            env = tau2_domain.environment(task)
            for side, call in ((side, call) for side, calls in gold_runs(task) for call in calls):
                # a gold call that fails in tau2 fails here too: the state it leaves is what counts
                with contextlib.suppress(Exception):
                    env.make_tool_call(call.name, requestor=side, **call.arguments)
                env.sync_tools()
            assert env.get_db_hash() == _tau2_hash(env.tools.db)
            if env.user_tools is not None:
                assert env.get_user_db_hash() == _tau2_hash(env.user_tools.db)
    assert _template_hash(domain) == registry.get_env_constructor(domain)().get_db_hash()


def test_a_database_replaced_by_tau2_hashes_whole() -> None:
    """tau2 rebuilds the database from a task's initialization data (``update_db``): nothing is shared any more."""
    task = Tau2Domain("mock").task("update_task_with_initialization_data")
    env = Tau2Domain("mock").environment(task)
    assert not any(isinstance(v, CopyOnRead) for v in env.tools.db.__dict__.values())
    assert env.get_db_hash() == _tau2_hash(env.tools.db)


def test_a_template_keeps_the_collections_record_by_record() -> None:
    template = Template.of(shared_domain("airline").templates["db"].db)
    assert template.collections == ("flights", "users", "reservations")
    telecom = Template.of(shared_domain("telecom").templates["db"].db)
    assert telecom.collections == ()
    assert _tau2_hash(telecom.copy()) == _tau2_hash(telecom.db)
