"""The commands of `kubectl retcon`: parse the arguments, call the SDK, print the result.

Start-up must stay fast (`kubectl retcon --help` imports click and nothing
heavy): the SDK, rich and the Kubernetes client are imported inside commands.
A `RetconError` from the SDK becomes `error: <its one line>` on stderr, exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from retcon.client import Client, RunDetail

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_META = "retcon.connection"


class _Group(click.Group):
    """A group that prints the SDK's errors as one line, `error: ...`, and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            # The SDK is imported lazily: if it is not loaded, the error cannot be one of its own.
            errors = sys.modules.get("retcon.client._errors")
            if errors is None or not isinstance(error, errors.RetconError):
                raise
            click.echo(f"error: {error}", err=True)
            ctx.exit(1)


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Accepted before or after the command (`-n ns list` and `list -n ns`); the later one wins.
    if value is not None and param.name:
        ctx.meta.setdefault(_META, {})[param.name] = value


def _with_connection(function: F) -> F:
    """The connection options, on the root and on every command."""
    options = (
        click.option(
            "-n",
            "--namespace",
            expose_value=False,
            callback=_remember,
            help="The namespace (default: the kubeconfig context's, else default).",
        ),
        click.option(
            "--kubeconfig",
            expose_value=False,
            callback=_remember,
            help="The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
        ),
        click.option(
            "--context",
            expose_value=False,
            callback=_remember,
            help="The kubeconfig context (default: the current one).",
        ),
    )
    for option in reversed(options):
        function = option(function)
    return function


def _client(ctx: click.Context) -> Client:
    from retcon.client import Client  # noqa: PLC0415 - the SDK loads only when a command runs

    settings = ctx.meta.get(_META, {})
    client = Client(
        namespace=settings.get("namespace"),
        kubeconfig=settings.get("kubeconfig"),
        context=settings.get("context"),
    )
    ctx.call_on_close(client.close)
    return client


def _json_option(value: str, option: str) -> Any:
    """A JSON value given inline, or as `@file` (`@-` is stdin; a .yaml/.yml file may be YAML)."""
    from retcon.client import InvalidInput  # noqa: PLC0415 - as above

    text, source = value, option
    if value.startswith("@"):
        path = value[1:]
        source = f"{option} {value}"
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidInput(f"{source}: cannot read the file: {error.strerror or error}") from None
        if path.endswith((".yaml", ".yml")):
            import yaml  # noqa: PLC0415 - only for a YAML file

            try:
                return yaml.safe_load(text)
            except yaml.YAMLError as error:
                raise InvalidInput(f"{source} is not valid YAML: {str(error).splitlines()[0]}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"{source} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# --- the root ----------------------------------------------------------------------------------------


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@_with_connection
def cli() -> None:
    """Run Retcon workflows and edit a run's history: pause it at a step boundary, look at what
    the finished steps produced, replace a step's output, and resume.

    Every command takes -n/--namespace, --kubeconfig and --context, before or after it.
    """


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("workflow")
@click.option("--input", "input_", metavar="JSON|@FILE", help="The run's input, a JSON object (default: {}).")
@click.option("--name", help="The run's name (default: WORKFLOW-<random>).")
@click.option("--tenant", help="The tenant the run belongs to.")
@click.option("--watch", "-w", is_flag=True, help="Follow the run until it ends or pauses.")
@_with_connection
@click.pass_context
def start(
    ctx: click.Context, workflow: str, input_: str | None, name: str | None, tenant: str | None, watch: bool
) -> None:
    """Start a run of WORKFLOW."""
    payload = _json_option(input_, "--input") if input_ is not None else {}
    client = _client(ctx)
    run = client.start_run(workflow, payload, name=name, tenant=tenant)
    click.echo(f"Started run {run.name} (workflow {workflow}, namespace {run.namespace})")
    if watch:
        ctx.exit(_follow(client, run.name, as_json=False))


@cli.command("list", context_settings=CONTEXT_SETTINGS)
@click.option("-A", "--all-namespaces", is_flag=True, help="List runs in every namespace.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_connection
@click.pass_context
def list_(ctx: click.Context, all_namespaces: bool, as_json: bool) -> None:
    """List runs."""
    runs = _client(ctx).list_runs(all_namespaces=all_namespaces)
    if as_json:
        _print_json([run.to_json() for run in runs])
        return
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    _render.runs(runs, all_namespaces=all_namespaces)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_connection
@click.pass_context
def get(ctx: click.Context, run: str, as_json: bool) -> None:
    """Show a run: its phase, input and steps."""
    detail = _client(ctx).get_run(run)
    if as_json:
        _print_json(detail.to_json())
        return
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    _render.run(detail)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON snapshot per line.")
@_with_connection
@click.pass_context
def watch(ctx: click.Context, run: str, as_json: bool) -> None:
    """Follow a run until it ends or pauses (exit 1 if it fails or is cancelled)."""
    ctx.exit(_follow(_client(ctx), run, as_json=as_json))


def _follow(client: Client, run: str, *, as_json: bool) -> int:
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    last: RunDetail | None = None
    try:
        for snapshot in client.watch_run(run):
            if as_json:
                click.echo(json.dumps(snapshot.to_json(), ensure_ascii=False))
            else:
                for line in _render.changes(last, snapshot):
                    click.echo(line)
            last = snapshot
    except KeyboardInterrupt:
        return 130
    if last is not None and not as_json:
        for line in _render.watch_ending(last):
            click.echo(line)
    return 1 if last is not None and last.phase in ("Failed", "Cancelled") else 0


# --- run: history editing ------------------------------------------------------------------------


@cli.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
def run() -> None:
    """Edit a run's history: pause, inspect, inject, resume; signal, cancel, add a step."""


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@_with_connection
@click.pass_context
def pause(ctx: click.Context, run_name: str) -> None:
    """Ask RUN to pause at its next step boundary (running steps finish first)."""
    outcome = _client(ctx).pause_run(run_name)
    click.echo(f"Run {run_name}: {outcome}")


@run.command("paused-state", context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_connection
@click.pass_context
def paused_state(ctx: click.Context, run_name: str, as_json: bool) -> None:
    """Show a paused (or failed) run's finished steps, their outputs, and the next step."""
    state = _client(ctx).get_paused_state(run_name)
    if as_json:
        _print_json(state.to_json())
        return
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    _render.paused_state(state)


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.argument("step")
@click.option("--output", required=True, metavar="JSON|@FILE", help="The step's new output, a JSON object.")
@click.option("--reason", required=True, help="Why: it goes into the audit trail.")
@click.option(
    "--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait."
)
@_with_connection
@click.pass_context
def inject(ctx: click.Context, run_name: str, step: str, output: str, reason: str, timeout: float) -> None:
    """Replace the output of STEP (id or name) in a paused or failed RUN."""
    value = _json_option(output, "--output")
    previous = _client(ctx).inject_step_output(run_name, step, value, reason, timeout=timeout)
    click.echo(f"Injected step {step}")
    click.echo(f"Previous output: {json.dumps(previous, separators=(',', ':'), ensure_ascii=False)}")


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.option("--from-step", metavar="STEP", help="Re-run this step (id or name) and everything downstream.")
@click.option("--release", is_flag=True, help="Delete the PauseRequests that hold the run.")
@_with_connection
@click.pass_context
def resume(ctx: click.Context, run_name: str, from_step: str | None, release: bool) -> None:
    """Resume a paused RUN."""
    result = _client(ctx).resume_run(run_name, from_step, release=release)
    for name in result.released:
        click.echo(f"Deleted PauseRequest {name}")
    suffix = f" from {result.from_step}" if result.from_step else ""
    click.echo(f"Run {run_name}: resume_requested{suffix}")


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.argument("step")
@click.option(
    "--data", required=True, metavar="JSON|@FILE", help="The signal: a JSON object, the step's output."
)
@_with_connection
@click.pass_context
def signal(ctx: click.Context, run_name: str, step: str, data: str) -> None:
    """Signal the Wait step STEP (id or name) of RUN."""
    value = _json_option(data, "--data")
    _client(ctx).signal_step(run_name, step, value)
    click.echo(f"Signalled step {step}")


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@_with_connection
@click.pass_context
def cancel(ctx: click.Context, run_name: str) -> None:
    """Cancel RUN: running step Jobs are stopped and the run ends Cancelled."""
    _client(ctx).cancel_run(run_name)
    click.echo(f"Run {run_name}: cancel_requested")


@run.command("add-step", context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.option("--after", required=True, metavar="STEP", help="Insert after this step (id or name).")
@click.option("--step", "step_", required=True, metavar="JSON|@FILE", help="The new step, as in a Workflow.")
@click.option("--reason", required=True, help="Why: it goes into the audit trail.")
@_with_connection
@click.pass_context
def add_step(ctx: click.Context, run_name: str, after: str, step_: str, reason: str) -> None:
    """Insert a step into a live RUN, after an injection point."""
    value = _json_option(step_, "--step")
    _client(ctx).add_step(run_name, after, value, reason)
    name = value.get("name") if isinstance(value, dict) else None
    click.echo(f"Run {run_name}: add_step_requested ({name} after {after})")


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_connection
@click.pass_context
def structure(ctx: click.Context, run_name: str, as_json: bool) -> None:
    """Show RUN's definition, the steps inserted at run time, and the execution order."""
    result = _client(ctx).run_structure(run_name)
    if as_json:
        _print_json(result.to_json())
        return
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    _render.structure(result)


@run.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_connection
@click.pass_context
def path(ctx: click.Context, run_name: str, as_json: bool) -> None:
    """Show the steps RUN executed, in order: type, duration, injected or not."""
    result = _client(ctx).execution_path(run_name)
    if as_json:
        _print_json(result.to_json())
        return
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    _render.path(result)


# --- audit -----------------------------------------------------------------------------------------


@cli.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
def audit() -> None:
    """Read a run's audit trail: who paused, injected, resumed, signalled, and why."""


@audit.command(context_settings=CONTEXT_SETTINGS)
@click.argument("run_name", metavar="RUN")
@click.option("--type", "type_", metavar="TYPE", help="Only entries of this type, e.g. step.injected.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_with_connection
@click.pass_context
def trail(ctx: click.Context, run_name: str, type_: str | None, as_json: bool) -> None:
    """Show RUN's audit trail, oldest first."""
    entries = _client(ctx).audit_trail(run_name, type_)
    if as_json:
        _print_json([entry.to_json() for entry in entries])
        return
    from retcon.cli import _render  # noqa: PLC0415 - rich loads only when printing for people

    _render.audit(run_name, entries)


def main(argv: Sequence[str] | None = None) -> None:
    """The `kubectl-retcon` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="kubectl retcon")
