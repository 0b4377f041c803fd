"""No service spells the outbox: its table, its insert or its wake-up channel appear in spm_common.outbox only,
so the outbox can change (a column, the channel's name) in one place. A service writes events with
`outbox.add`, `outbox.add_many`, or `outbox.InStatement` in a statement of its own."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SQL naming the table (`INSERT INTO outbox`, `FROM outbox`, `UPDATE outbox`, `JOIN outbox`) or the channel.
SPELLED = re.compile(r"\b(?:INTO|FROM|UPDATE|JOIN|TABLE)\s+outbox\b|spm_outbox_'|pg_notify\('spm_outbox", re.I)


def test_no_service_source_spells_the_outbox_table_or_its_channel() -> None:
    sources = sorted(ROOT.glob("services/*/src/**/*.py"))
    assert sources, "no service source found"
    spelled = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if SPELLED.search(line)
    ]
    assert spelled == []
