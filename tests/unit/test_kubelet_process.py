"""Processes: exit codes arrive at once, signals reach the whole group, leftovers are ended."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from localkube.kubelet.process import LIVE, exit_code, spawn

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def test_signals_map_to_shell_exit_codes() -> None:
    assert (exit_code(0), exit_code(3), exit_code(-15), exit_code(-9)) == (0, 3, 143, 137)


async def test_output_is_appended_and_the_exit_code_reported(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    for word in ("one", "two"):
        process = spawn(["sh", "-c", f"echo {word}; echo err >&2; exit 4"], env=ENV, cwd=tmp_path, output=log)
        assert await process.wait() == 4
    assert log.read_text() == "one\nerr\ntwo\nerr\n"


async def test_an_exit_is_noticed_within_milliseconds(tmp_path: Path) -> None:
    process = spawn(["sleep", "0.2"], env=ENV, cwd=tmp_path, output=None)
    started = time.monotonic()
    await process.wait()
    assert time.monotonic() - started < 0.2 + 0.05


async def test_stop_sends_sigterm_then_sigkill_after_the_grace(tmp_path: Path) -> None:
    polite = spawn(
        ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"], env=ENV, cwd=tmp_path, output=None
    )
    stubborn = spawn(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], env=ENV, cwd=tmp_path, output=None
    )
    await asyncio.sleep(0.1)  # let the traps be installed
    assert await polite.stop(5) == 0
    started = time.monotonic()
    assert await stubborn.stop(0.3) == 137
    assert 0.3 <= time.monotonic() - started < 2
    assert not LIVE & {polite, stubborn}


async def test_what_a_process_leaves_behind_is_ended_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    process = spawn(
        ["sh", "-c", f"sleep 30 & echo $! > {pidfile}; exit 0"], env=ENV, cwd=tmp_path, output=None
    )
    assert await process.wait() == 0
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"background child {child} survived its container")


def _alive(pid: int) -> bool:
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
