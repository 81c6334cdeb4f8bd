"""The ``reproducer`` command line: its global options and its version."""

from __future__ import annotations

import pytest

import reproducer
from cluster.cli import _split_command, main


def test_version_is_the_installed_packages() -> None:
    from importlib.metadata import version  # noqa: PLC0415

    assert reproducer.__version__ == version("ray-reproducer")


def test_the_version_option_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"reproducer {reproducer.__version__}"


def test_global_options_go_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`reproducer --logger_stream_level debug run --analysis X ...` used to fail with
    "unrecognized arguments: --analysis": the global option's value was taken for the
    command."""
    argv = ["--logger_stream_level", "debug", "run", "--analysis", "hdf5-summary", "--help"]
    assert _split_command(argv) == (argv[:2], "run", argv[3:])
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: reproducer run") and "--logger_stream_level" in shown


def test_a_command_after_a_flag_without_value_is_found() -> None:
    assert _split_command(["-v", "upload", "x"]) == (["-v"], "upload", ["x"])
    assert _split_command(["--logger_stream_level=debug", "demo"]) == (
        ["--logger_stream_level=debug"],
        "demo",
        [],
    )
    assert _split_command(["--version"]) == (["--version"], None, [])
