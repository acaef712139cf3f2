"""The README's journal section documents every event kind, and only those."""

from __future__ import annotations

from mmbot.journal import Kind
from tests.support.readme import section


def _event_rows() -> dict[str, list[str]]:
    body = section("Events", section("The journal"))
    rows = [line for line in body.splitlines() if line.startswith("| `")]
    cells = [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in rows]
    return {cell[0].strip("`"): cell[1:] for cell in cells}


def test_the_journal_section_has_a_row_for_every_event_kind_and_no_other() -> None:
    rows = _event_rows()
    assert list(rows) == [kind.value for kind in Kind]
    for kind, (when, fields) in rows.items():
        assert when, kind
        assert fields, kind


def test_the_run_started_row_documents_what_tells_runs_apart() -> None:
    fields = _event_rows()["run_started"][1]
    for name in ("`version`", "`commit`", "`seed`", "`strategies`", "`params`", "`config`"):
        assert name in fields
