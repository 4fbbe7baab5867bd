"""The scenario catalogue: the fixed numbers of the design table, and user files that extend it."""

from __future__ import annotations

import json

import pytest

from simulator.scenarios import CatalogueError, load_catalogue

# design.md's table: msisdn -> (outcome, push, callback, at)
DESIGN_TABLE = {
    "254708374149": ("interactive", "accept", "once", "auto_answer"),
    "254700000000": ("0", "accept", "once", "auto_answer"),
    "254700000001": ("1", "accept", "once", "auto_answer"),
    "254700000002": ("1032", "accept", "once", "auto_answer"),
    "254700000003": ("2001", "accept", "once", "auto_answer"),
    "254700000004": ("1037", "accept", "once", "auto_answer"),
    "254700000005": ("1019", "accept", "once", "prompt_lifetime"),
    "254700000006": ("0", "locked", "once", "auto_answer"),
    "254700000007": ("0", "accept", "never", "auto_answer"),
    "254700000008": ("0", "accept", "twice", "auto_answer"),
    "254700000009": ("0", "accept", "late", "auto_answer"),
}


def write(tmp_path, content) -> str:
    path = tmp_path / "scenarios.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


def catalogue_error(path: str) -> str:
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    return str(info.value)


# -- built-in ---------------------------------------------------------------------------------

def test_builtin_catalogue_holds_exactly_the_design_numbers():
    assert set(load_catalogue()) == set(DESIGN_TABLE)


@pytest.mark.parametrize("msisdn", sorted(DESIGN_TABLE))
def test_builtin_number_has_the_design_outcome(msisdn):
    scenario = load_catalogue()[msisdn]
    assert scenario.msisdn == msisdn
    assert (scenario.outcome, scenario.push, scenario.callback, scenario.at) == DESIGN_TABLE[msisdn]


def test_only_the_sandbox_number_is_interactive():
    assert [m for m, s in load_catalogue().items() if s.interactive] == ["254708374149"]


def test_paying_numbers_have_enough_balance_for_large_payments():
    catalogue = load_catalogue()
    for msisdn in ("254700000000", "254700000007", "254700000008", "254700000009"):
        assert catalogue[msisdn].balance >= 150_000


def test_empty_extra_file_name_loads_only_the_builtin_catalogue():
    assert load_catalogue("") == load_catalogue(None) == load_catalogue()


# -- user files -------------------------------------------------------------------------------

def test_user_file_adds_a_number_and_overrides_a_builtin_one(tmp_path):
    path = write(tmp_path, [
        {"msisdn": "254711000001", "title": "Busy", "outcome": "26", "callback": "twice", "balance": 10},
        {"msisdn": "254700000002", "title": "Pays instead", "outcome": "0"},
    ])
    catalogue = load_catalogue(path)
    assert len(catalogue) == len(DESIGN_TABLE) + 1
    added = catalogue["254711000001"]
    assert (added.title, added.outcome, added.callback, added.balance) == ("Busy", "26", "twice", 10)
    overridden = catalogue["254700000002"]
    assert (overridden.title, overridden.outcome) == ("Pays instead", "0")
    assert catalogue["254700000003"].outcome == "2001"  # untouched built-ins stay


def test_user_entry_defaults_to_interactive_accept_once(tmp_path):
    scenario = load_catalogue(write(tmp_path, [{"msisdn": "254111000002"}]))["254111000002"]
    assert scenario.interactive
    assert (scenario.push, scenario.callback, scenario.at, scenario.balance) == ("accept", "once", "auto_answer", None)
    assert scenario.title == "254111000002"


def test_empty_user_list_changes_nothing(tmp_path):
    assert load_catalogue(write(tmp_path, [])) == load_catalogue()


def test_user_file_that_is_not_json_is_refused(tmp_path):
    path = write(tmp_path, "[{not json")
    message = catalogue_error(path)
    assert path in message and "not valid JSON" in message


@pytest.mark.parametrize("content", [{"msisdn": "254711000001"}, "\"254711000001\"", "42"])
def test_user_file_that_is_not_a_list_is_refused(tmp_path, content):
    message = catalogue_error(write(tmp_path, content))
    assert "must be a JSON list" in message


@pytest.mark.parametrize("msisdn", ["0711000001", "25471100000", "2547110000011", "254811000001", "", "+254711000001"])
def test_user_entry_with_a_bad_msisdn_is_refused(tmp_path, msisdn):
    message = catalogue_error(write(tmp_path, [{"msisdn": msisdn, "outcome": "0"}]))
    assert "msisdn" in message and repr(msisdn) in message


def test_user_entry_without_msisdn_is_refused(tmp_path):
    assert "msisdn" in catalogue_error(write(tmp_path, [{"outcome": "0"}]))


def test_user_entry_that_is_not_an_object_is_refused(tmp_path):
    assert "must be an object" in catalogue_error(write(tmp_path, ["254711000001"]))


@pytest.mark.parametrize("field, value, allowed", [
    ("callback", "thrice", "once, never, twice, late"),
    ("push", "maybe", "accept, locked"),
    ("at", "noon", "auto_answer, prompt_lifetime"),
])
def test_user_entry_with_a_bad_behaviour_is_refused(tmp_path, field, value, allowed):
    message = catalogue_error(write(tmp_path, [{"msisdn": "254711000001", field: value}]))
    assert "254711000001" in message and field in message and allowed in message


@pytest.mark.parametrize("balance", [-1, 1.5, "100", True])
def test_user_entry_with_a_bad_balance_is_refused(tmp_path, balance):
    message = catalogue_error(write(tmp_path, [{"msisdn": "254711000001", "balance": balance}]))
    assert "balance" in message


def test_bad_entry_after_good_ones_still_refuses_the_whole_file(tmp_path):
    path = write(tmp_path, [{"msisdn": "254711000001"}, {"msisdn": "254711000002", "callback": "sometimes"}])
    assert "254711000002" in catalogue_error(path)


def test_missing_user_file_is_refused(tmp_path):
    path = str(tmp_path / "nope.json")
    message = catalogue_error(path)
    assert "SIMULATOR_SCENARIOS_FILE" in message and path in message


@pytest.mark.parametrize("outcome", ["", None])
def test_user_entry_with_an_unusable_outcome_is_refused(tmp_path, outcome):
    with pytest.raises(CatalogueError):
        load_catalogue(write(tmp_path, [{"msisdn": "254711000001", "outcome": outcome}]))


def test_user_entry_msisdn_with_trailing_newline_is_refused(tmp_path):
    with pytest.raises(CatalogueError):
        load_catalogue(write(tmp_path, [{"msisdn": "254711000001\n", "outcome": "0"}]))
