"""How `kubectl retcon` shows things to people: rich tables, and the lines `watch` prints.

Imported only by commands that print for people; `--json` never comes here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from retcon.client import (
    AuditRecord,
    ExecutionPath,
    PausedState,
    RunDetail,
    RunStructure,
    RunSummary,
)

NONE = "-"
_PREVIEW = 60
_UNBOUNDED = 4096
#: Columns of free text, which may fold on a narrow terminal; the others (names, ids) never do.
_FOLDING = frozenset({"OUTPUT", "REASON", "CHANGE", "WORK", "DEPENDS ON"})


class _Plain(Console):
    """Output piped to a file or grep: lines as long as their content (not folded at 80 columns)
    and without the padding tables leave at their ends, as kubectl prints them."""

    def print(self, *objects: Any, **options: Any) -> None:
        with self.capture() as captured:
            super().print(*objects, **options)
        self.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def _console() -> Console:
    # Made per call so it writes to the current sys.stdout (tests swap it).
    console = Console(highlight=False)
    return console if console.is_terminal else _Plain(highlight=False, width=_UNBOUNDED)


def _compact(value: Any, limit: int | None = _PREVIEW) -> str:
    if value is None:
        return NONE
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _age(created: datetime | None, now: datetime | None = None) -> str:
    if created is None:
        return NONE
    seconds = int(((now or datetime.now(UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _phase(phase: str, reason: str | None = None) -> Text:
    style = {
        "Succeeded": "green",
        "Failed": "red",
        "Cancelled": "red",
        "Paused": "yellow",
        "Pausing": "yellow",
        "Waiting": "yellow",
        "Running": "cyan",
        "Skipped": "dim",
    }.get(phase, "")
    return Text(f"{phase} ({reason})" if reason else phase, style=style)


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in _FOLDING)
    return table


def runs(items: Sequence[RunSummary], *, all_namespaces: bool) -> None:
    console = _console()
    if not items:
        console.print("No runs found.")
        return
    columns = ["NAME", "WORKFLOW", "PHASE", "PROGRESS", "CURRENT/NEXT", "AGE"]
    table = _table(*(["NAMESPACE", *columns] if all_namespaces else columns))
    for item in items:
        row: list[str | Text] = [
            item.name,
            item.workflow,
            _phase(item.phase, item.pause_reason),
            item.progress or NONE,
            item.current_step or item.next_step_hint or NONE,
            _age(item.created_at),
        ]
        table.add_row(*([item.namespace, *row] if all_namespaces else row))
    console.print(table)


def run(detail: RunDetail) -> None:
    console = _console()
    fields: list[tuple[str, str | Text]] = [
        ("Run", detail.name),
        ("Namespace", detail.namespace),
        ("Workflow", detail.workflow),
        ("Phase", _phase(detail.phase, detail.pause_reason)),
        ("Next step", detail.next_step_hint or NONE),
        ("Progress", detail.progress or NONE),
        ("Tenant", detail.tenant or NONE),
        ("Age", _age(detail.created_at)),
        ("Input", _compact(detail.input, None)),
    ]
    if detail.pause_requested and detail.phase not in ("Paused", "Pausing"):
        fields.append(("Pause", "requested"))
    if detail.message:
        fields.append(("Message", detail.message))
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column(overflow="fold")
    for label, value in fields:
        header.add_row(f"{label}:", value)
    console.print(header)
    if not detail.steps:
        return
    console.print()
    table = _table("ID", "NAME", "TYPE", "PHASE", "ATTEMPTS", "DURATION", "INJECTED", "OUTPUT")
    for step in detail.steps:
        output = _compact(step.output) if step.output is not None or not step.output_ref else "(by reference)"
        table.add_row(
            step.id,
            step.name,
            step.type,
            _phase(step.phase),
            str(step.attempts),
            _duration(step.duration_seconds),
            "yes" if step.injected else "no",
            output,
        )
    console.print(table)


def paused_state(state: PausedState) -> None:
    console = _console()
    console.print(Text.assemble("Run ", (state.run, "bold"), " is ", _phase(state.phase, state.pause_reason)))
    console.print(f"Next step: {state.next_step_hint or NONE}")
    if not state.steps:
        console.print("No step has finished yet.")
        return
    console.print()
    table = _table("ID", "NAME", "PHASE", "INJECTED", "OUTPUT")
    for step in state.steps:
        table.add_row(
            step.id, step.name, _phase(step.phase), "yes" if step.injected else "no", _compact(step.output)
        )
    console.print(table)


def audit(run_name: str, entries: Sequence[AuditRecord]) -> None:
    console = _console()
    if not entries:
        console.print(f"No audit entries for run {run_name}.")
        return
    table = _table("TIME", "TYPE", "ACTOR", "STEP", "REASON", "CHANGE")
    for entry in entries:
        step = f"{entry.step_id} ({entry.step_name})" if entry.step_id else entry.step_name or NONE
        if entry.previous_output is not None or entry.new_output is not None:
            change = f"{_compact(entry.previous_output, 40)} → {_compact(entry.new_output, 40)}"
        else:
            change = _compact(entry.details, 60)
        table.add_row(
            entry.time.isoformat(timespec="seconds").replace("+00:00", "Z"),
            entry.type,
            entry.actor,
            step,
            entry.reason or NONE,
            change,
        )
    console.print(table)


def structure(result: RunStructure) -> None:
    console = _console()
    source = (
        "its definition snapshot" if result.from_snapshot else "the Workflow (the run has no snapshot yet)"
    )
    console.print(
        Text.assemble("Run ", (result.run, "bold"), f" of workflow {result.workflow}, from {source}")
    )
    console.print()
    console.print(Text("Definition", style="bold"))
    table = _table("ID", "NAME", "TYPE", "WORK", "DEPENDS ON")
    for step in result.definition:
        table.add_row(
            step.id or NONE, step.name, step.type, step.work or NONE, ", ".join(step.depends_on) or NONE
        )
    console.print(table)
    console.print()
    console.print(Text("Inserted at run time", style="bold"))
    if result.inserted:
        inserted = _table("ID", "NAME", "TYPE", "AFTER", "BY")
        for step in result.inserted:
            inserted.add_row(
                step.id or NONE, step.name, step.type, step.inserted_after or NONE, step.inserted_by or NONE
            )
        console.print(inserted)
    else:
        console.print("none")
    console.print()
    console.print(Text("Execution order", style="bold"))
    for index, step in enumerate(result.execution_order, start=1):
        line = Text(f"{index:>3}. {step.name}")
        if step.injected:
            line.append(" [INJECTED]", style="magenta")
        if step.phase:
            line.append(f"  ({step.phase})", style="dim")
        console.print(line)


def path(result: ExecutionPath) -> None:
    console = _console()
    if not result.steps:
        console.print(f"No step of run {result.run} has started yet.")
        return
    table = _table("#", "STEP", "TYPE", "PHASE", "DURATION", "INJECTED?", "OUTPUT")
    for index, step in enumerate(result.steps, start=1):
        table.add_row(
            str(index),
            f"{step.id} {step.name}",
            step.type,
            _phase(step.phase),
            _duration(step.duration_seconds),
            "YES" if step.injected else "NO",
            "injected" if step.output_injected else NONE,
        )
    console.print(table)


# --- watch -----------------------------------------------------------------------------------------


def _clock() -> str:
    return datetime.now().astimezone().strftime("%H:%M:%S")


def _run_line(detail: RunDetail) -> str:
    line = f"{_clock()}  run {detail.name}: {detail.phase}"
    if detail.pause_reason:
        line += f" ({detail.pause_reason})"
    if detail.message and detail.phase in ("Failed", "Cancelled"):
        line += f": {detail.message}"
    return line


def changes(previous: RunDetail | None, current: RunDetail) -> Iterator[str]:
    """Lines for what changed between two snapshots: step phases, then the run's phase."""
    before = {step.id: step.phase for step in previous.steps} if previous else {}
    run_changed = previous is None or previous.phase != current.phase
    settled = current.ended or current.phase == "Paused"
    if run_changed and not settled:
        yield _run_line(current)
    for step in current.steps:
        if before.get(step.id, "Pending") == step.phase:
            continue
        line = f"{_clock()}    {step.id} {step.name}: {step.phase}"
        if step.phase in ("Succeeded", "Failed") and step.duration_seconds is not None:
            line += f" in {_duration(step.duration_seconds)}"
        if step.phase == "Failed" and step.message:
            line += f": {step.message}"
        yield line
    if run_changed and settled:
        yield _run_line(current)


def watch_ending(detail: RunDetail) -> Iterator[str]:
    """What to do next, when a watch stops at a pause."""
    if detail.phase != "Paused":
        return
    if detail.pause_reason == "wait":
        yield f"Signal it: kubectl retcon run signal {detail.name} {detail.next_step_hint} --data JSON"
        return
    yield f"Next step: {detail.next_step_hint or NONE}"
    yield f"Inspect it: kubectl retcon run paused-state {detail.name}"
