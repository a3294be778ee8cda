"""Table-driven tests of the pure merge decisions: survivor, grouping, edit plan, snapshot format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from storage.merge_plan import (
    CandidateSet,
    EditPlan,
    Member,
    UnionFind,
    choose_survivor,
    group_candidates,
    plan_edit_moves,
    row_from_json,
    row_to_json,
)
from storage.schema import customers, merge_events


def _t(day: int, hour: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, tzinfo=UTC)


def _m(id_: int, day: int, subs: bool = False) -> Member:
    return Member(id=id_, uuid=f"cus_{id_}", created_at=_t(day), has_subscriptions=subs)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        pytest.param([_m(1, 5), _m(2, 3)], 2, id="oldest-wins-without-subscriptions"),
        pytest.param([_m(1, 1), _m(2, 9, subs=True)], 2, id="subscriber-wins-over-older-lead"),
        pytest.param([_m(1, 4, True), _m(2, 2, True), _m(3, 1)], 2, id="oldest-subscriber"),
        pytest.param([_m(7, 1), _m(3, 1)], 3, id="same-age-lowest-id"),
        pytest.param([_m(5, 1)], 5, id="single"),
    ],
)
def test_choose_survivor(members: list[Member], expected: int) -> None:
    assert choose_survivor(members).id == expected


def test_choose_survivor_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose_survivor([])


def test_union_find_joins_chains() -> None:
    uf = UnionFind()
    uf.union(1, 2)
    uf.union(3, 4)
    uf.union(2, 3)
    uf.find(9)
    sets = sorted(sorted(s) for s in uf.sets().values())
    assert sets == [[1, 2, 3, 4], [9]]


MEMBERS = {i: _m(i, 10 - i) for i in range(1, 10)}  # higher id = older


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        pytest.param(
            [CandidateSet("email", "a@x.io", (1, 2))],
            [(2, [1], ["email"])],
            id="pair-by-email",
        ),
        pytest.param(
            [CandidateSet("email", "a@x.io", (1, 2)), CandidateSet("external_id", "42", (2, 3))],
            [(3, [2, 1], ["email", "external_id"])],
            id="chain-across-rules-is-one-group",
        ),
        pytest.param(
            [CandidateSet("email", "a@x.io", (1, 2, 3)), CandidateSet("domain", "x.io", (3, 1))],
            [(3, [2, 1], ["email", "domain"])],
            id="three-way-and-overlap",
        ),
        pytest.param(
            [CandidateSet("email", "a@x.io", (1, 2)), CandidateSet("email", "b@y.io", (4, 5))],
            [(2, [1], ["email"]), (5, [4], ["email"])],
            id="two-separate-groups",
        ),
        pytest.param(
            [CandidateSet("email", "a@x.io", (1, 99)), CandidateSet("email", "b@x.io", (6, 6))],
            [],
            id="unknown-ids-and-self-pairs-ignored",
        ),
    ],
)
def test_group_candidates(candidates: list[CandidateSet], expected: list[tuple[int, list[int], list[str]]]) -> None:
    groups = group_candidates(candidates, MEMBERS)
    got = sorted((g.survivor.id, [m.id for m in g.others], g.rules) for g in groups)
    assert got == sorted(expected)


def test_group_never_puts_a_customer_in_two_groups() -> None:
    candidates = [CandidateSet("email", f"k{i}", (i, i + 1)) for i in range(1, 9)]
    groups = group_candidates(candidates, MEMBERS)
    assert len(groups) == 1
    assert sorted(m.id for m in groups[0].members) == list(range(1, 10))
    assert groups[0].survivor.id == 9


def test_group_leaves_out_pairs_a_user_separated() -> None:
    candidates = [CandidateSet("email", "a@x.io", (1, 2, 3))]
    groups = group_candidates(candidates, MEMBERS, {frozenset(("cus_3", "cus_1"))})
    assert [(g.survivor.id, [m.id for m in g.others]) for g in groups] == [(3, [2])]
    assert group_candidates(candidates[:1], {1: MEMBERS[1], 3: MEMBERS[3]}, {frozenset(("cus_3", "cus_1"))}) == []


def test_group_subscriber_survives_and_keys_are_reported() -> None:
    members = {1: _m(1, 1), 2: _m(2, 5, subs=True)}
    (group,) = group_candidates([CandidateSet("email", "jane@acme.io", (1, 2))], members)
    assert group.survivor.id == 2
    assert group.as_json() == {"survivor": "cus_2", "merged": ["cus_1"], "rule": "email",
                               "keys": {"email": ["jane@acme.io"]}}


E = {"name": "Into", "email": None, "company": "Acme", "lead_created_at": _t(5), "free_trial_started_at": None,
     "tags": ["vip"], "custom": {"plan": "pro"}}
F = {"name": "From", "email": "f@x.io", "company": None, "lead_created_at": _t(2), "free_trial_started_at": _t(3),
     "tags": ["beta"], "custom": {"plan": "free", "seats": 3}}


@pytest.mark.parametrize(
    ("into_edits", "from_edits", "expected"),
    [
        pytest.param({}, {}, EditPlan(), id="no-edits-nothing-to-do"),
        pytest.param({}, {"email": "e@x.io"}, EditPlan(move=["email"]), id="fills-a-gap"),
        pytest.param({}, {"name": "F"}, EditPlan(drop=["name"]), id="survivor-source-value-wins"),
        pytest.param({"owner": "a"}, {"owner": "b"}, EditPlan(drop=["owner"]), id="survivor-edit-wins"),
        pytest.param({}, {"custom.plan": "x"}, EditPlan(drop=["custom.plan"]), id="custom-conflict-survivor"),
        pytest.param({}, {"custom.region": "EU"}, EditPlan(move=["custom.region"]), id="custom-new-key-moves"),
        pytest.param({}, {"tag.beta": True}, EditPlan(move=["tag.beta"]), id="added-tag-moves"),
        pytest.param({}, {"tag.vip": False}, EditPlan(drop=["tag.vip"]), id="removal-keeps-survivor-tag"),
        pytest.param({}, {"tag.old": False}, EditPlan(move=["tag.old"]), id="removal-of-others-tag-moves"),
        pytest.param({"tag.x": True}, {"tag.x": False}, EditPlan(drop=["tag.x"]), id="tag-conflict-survivor"),
        pytest.param(
            {}, {"lead_created_at": _t(2).isoformat()},
            EditPlan(set_into={"lead_created_at": _t(2)}, drop=["lead_created_at"]),
            id="earlier-lead-edit-carried",
        ),
        pytest.param(
            {"lead_created_at": _t(5).isoformat()}, {},
            EditPlan(set_into={"lead_created_at": _t(2)}),
            id="into-edit-later-than-from-source-earliest-wins",
        ),
        pytest.param(
            {"lead_created_at": _t(1).isoformat()}, {"lead_created_at": _t(2).isoformat()},
            EditPlan(drop=["lead_created_at"]),
            id="into-edit-already-earliest",
        ),
        pytest.param(
            {"free_trial_started_at": None}, {},
            EditPlan(set_into={"free_trial_started_at": _t(3)}),
            id="trial-date-from-other",
        ),
    ],
)
def test_plan_edit_moves(into_edits: dict, from_edits: dict, expected: EditPlan) -> None:
    into_eff = dict(E)
    from_eff = dict(F)
    # An edit is the effective value (manual edit wins in the projection).
    into_eff.update({k: v for k, v in into_edits.items() if "." not in k})
    from_eff.update({k: v for k, v in from_edits.items() if "." not in k})
    plan = plan_edit_moves(into_eff, into_edits, from_eff, from_edits)
    assert plan == expected


def test_row_snapshot_round_trip_is_exact() -> None:
    row = {
        "id": 12, "uuid": "cus_abc", "created_at": datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        "updated_at": _t(9), "name": "Zoë", "email": None, "tags": ["a", "b"], "custom": {"n": 1.5, "ok": True},
        "has_subscriptions": True, "lead_created_at": None,
    }
    data = row_to_json(customers, row)
    assert data["created_at"] == "2025-03-04T05:06:07.891011+00:00"
    assert row_from_json(customers, data) == row


def test_row_snapshot_skips_unknown_columns() -> None:
    data = row_to_json(merge_events, {"uuid": "mrg_1", "bogus": 1})
    assert data == {"uuid": "mrg_1"}
