"""The systemd unit example: a SIGTERM drain with time to finish, a restart on failure,
and a command line the ``reproducer run`` parser accepts."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from analyses.runner import AnalysesRun

UNIT = Path(__file__).parents[2] / "cluster" / "examples" / "ray-reproducer.service"


def test_the_service_unit_drains_on_stop_and_restarts_on_failure() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign] # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) >= 120  # the drain's bounded waits fit in it
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"

    words = shlex.split(service["ExecStart"].replace("\\\n", " ").replace("\\", " "))
    assert words[0].endswith("/reproducer") and words[1] == "run"
    parsed = AnalysesRun.get_argument_parser().parse_args(words[2:])
    assert parsed.consumer_group_id == "lab-analyses"  # fixed: a restart resumes
    assert str(parsed.output_dir) == "/var/lib/ray-reproducer"
