"""systemd parsers on outputs captured from systemd 252 (tests/fixtures/systemd/SOURCES.md)."""

from __future__ import annotations

import pytest

from nixfleet.facts.errors import FactParseError
from nixfleet.facts.systemd import (
    FailedUnits,
    SystemState,
    UnitStates,
    UnitStatus,
    parse_failed_units,
    parse_system_state,
    parse_unit_show,
)


@pytest.mark.parametrize("state", ["running", "degraded", "offline"])
def test_system_state_is_the_one_word_systemctl_prints(state: str, captured) -> None:
    assert parse_system_state(captured(f"systemd/systemctl-is-system-running-{state}.txt")) == state


def test_system_state_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="systemctl is-system-running: not a system state"):
        parse_system_state("Failed to connect to bus: No such file or directory\n")


def test_the_state_command_tolerates_degraded_exit_codes() -> None:
    assert SystemState().command().endswith("|| true")


FAILED = UnitStatus(
    "broken-thing.service", "loaded", "failed", "failed", "Lab unit that always fails"
)


def test_failed_units_from_json(captured) -> None:
    units = parse_failed_units(captured("systemd/systemctl-list-units-failed.json"))

    assert units == [FAILED]
    assert units[0].is_failed


def test_no_failed_units_in_json(captured) -> None:
    assert parse_failed_units(captured("systemd/systemctl-list-units-failed-none.json")) == []


def test_failed_units_from_plain_text_as_systemd_before_247_prints_them(captured) -> None:
    assert parse_failed_units(captured("systemd/systemctl-list-units-failed-plain.txt")) == [FAILED]


def test_no_failed_units_in_plain_text() -> None:
    assert parse_failed_units("") == []


def test_the_decorated_table_is_refused_rather_than_misread(captured) -> None:
    with pytest.raises(FactParseError, match="--plain --no-legend"):
        parse_failed_units(captured("systemd/systemctl-list-units-failed-table.txt"))


def test_failed_units_json_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="systemctl list-units: unexpected JSON"):
        parse_failed_units('[{"unit": "a.service"}]')


def test_the_failed_units_command_asks_for_json_and_plain_text_at_once() -> None:
    command = FailedUnits().command()

    assert "--output=json" in command and "--plain --no-legend" in command


def test_unit_states_of_running_failed_and_missing_units(captured) -> None:
    units = parse_unit_show(captured("systemd/systemctl-show-units.txt"))

    assert units == {
        "sleeper.service": UnitStatus("sleeper.service", "loaded", "active", "running"),
        "broken-thing.service": UnitStatus("broken-thing.service", "loaded", "failed", "failed"),
        "does-not-exist.service": UnitStatus(
            "does-not-exist.service", "not-found", "inactive", "dead"
        ),
    }


def test_a_unit_asked_without_suffix_comes_back_as_service(captured) -> None:
    units = parse_unit_show(captured("systemd/systemctl-show-no-suffix.txt"))

    assert list(units) == ["sleeper.service", "broken-thing.service"]
    assert units["sleeper.service"].active == "inactive"


def test_unit_show_garbage_raises() -> None:
    with pytest.raises(FactParseError, match="systemctl show: a unit block lacks 'LoadState'"):
        parse_unit_show("Id=x.service\nActiveState=active\n")


def test_unit_names_are_quoted_in_the_command() -> None:
    command = UnitStates().command(units=["sshd.service", "evil; rm -rf /"])

    assert str(command) == (
        "systemctl show --no-pager -p Id,LoadState,ActiveState,SubState "
        "sshd.service 'evil; rm -rf /'"
    )


def test_no_units_asked_runs_nothing() -> None:
    assert UnitStates().command(units=[]) == "true"
    assert UnitStates().process([""]) == {}
