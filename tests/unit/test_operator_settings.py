"""The operator refuses settings a user got wrong, on one line, before it starts anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retcon.kube.config import OperatorConfig


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "RETCON_LEASE_SECONDS",
            "abc",
            "RETCON_LEASE_SECONDS must be a number of seconds of at least 1, not 'abc'",
        ),
        (
            "RETCON_LEASE_SECONDS",
            "0",
            "RETCON_LEASE_SECONDS must be a number of seconds of at least 1, not '0'",
        ),
        ("RETCON_WEBHOOK", "maybe", "RETCON_WEBHOOK must be local, cluster or off, not 'maybe'"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_2(variable: str, value: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "retcon.operator_main"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", variable: value},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == f"retcon-operator: {message}"


def test_settings_come_from_the_environment() -> None:
    config = OperatorConfig.from_env(
        {"RETCON_LEADER_ELECT": "true", "RETCON_LEASE_SECONDS": "4", "POD_NAMESPACE": "ops"}
    )
    assert (config.leader_elect, config.lease_seconds, config.lease_namespace) == (True, 4.0, "ops")
