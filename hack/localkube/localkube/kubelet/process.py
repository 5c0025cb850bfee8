"""Local processes: spawn one in its own process group, learn of its exit at once, signal it.

An exit is noticed through a pidfd registered with the event loop, so there is
no thread and no polling per process, and the pod status can follow within
milliseconds. Every process the kubelet starts is tracked here so that a
stopping kubelet can end them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Every process started and not yet reaped, for a clean shutdown.
LIVE: set[Process] = set()


def exit_code(returncode: int) -> int:
    """A shell-style exit code: a process killed by signal N exited with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Process:
    """A spawned process, leader of its own process group (its PID is the group ID)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        LIVE.add(self)

    def _on_exit(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        # The leader is a zombie until reaped, so its PID (the group ID) cannot be
        # recycled yet: now is the moment to end whatever it left behind, as a
        # container runtime does when a container's first process exits.
        self.signal_group(signal.SIGKILL)
        returncode = self._popen.wait()
        LIVE.discard(self)
        if not self._exited.done():
            self._exited.set_result(exit_code(returncode))

    @property
    def running(self) -> bool:
        return not self._exited.done()

    async def wait(self) -> int:
        """The exit code, once the process has exited."""
        return await asyncio.shield(self._exited)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL it after `grace` seconds; the exit code."""
        if self.running:
            self.signal_group(signal.SIGTERM)
            try:
                return await asyncio.wait_for(self.wait(), timeout=max(grace, 0))
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.wait()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    output: Path | None,
) -> Process:
    """Start `argv` with stdout and stderr appended to `output` (or discarded), stdin empty."""
    if output is None:
        stdout: int = subprocess.DEVNULL
        fd = -1
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        stdout = fd
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if fd >= 0:
            os.close(fd)
    return Process(popen)


async def stop_all(grace: float) -> None:
    """SIGTERM every live process group; SIGKILL whatever is left after `grace` seconds."""
    processes = list(LIVE)
    if not processes:
        return
    await asyncio.gather(*(process.stop(grace) for process in processes), return_exceptions=True)
