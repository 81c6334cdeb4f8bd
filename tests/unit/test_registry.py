"""Registering analyses and finding them: by name, module path and entry point."""

from __future__ import annotations

import hashlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from analyses import Analysis, RegistrationError, Resources, known, register, resolve
from reproducer import DataFileStreamReproducer


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_registered_analysis_is_found_with_what_it_needs() -> None:
    name = unique("line-count")

    @register(name, version="2", files=r".*\.csv$", num_cpus=0.5, resources={"analysis": 1})
    class LineCount(Analysis):
        def analyze(self, datafile: Any) -> dict[str, int]:
            return {"lines": datafile.bytestring.count(b"\n")}

    (spec,) = resolve(name)
    assert (spec.name, spec.factory, spec.version, spec.files) == (
        name,
        LineCount,
        "2",
        r".*\.csv$",
    )
    assert spec.resources.actor_options() == {"num_cpus": 0.5, "resources": {"analysis": 1}}
    assert name in known()


def test_module_paths_and_several_names_at_once() -> None:
    name = unique("sum")

    @register(name)
    class Sum(Analysis):
        def analyze(self, datafile: Any) -> dict[str, int]:
            return {"sum": sum(datafile.bytestring)}

    specs = resolve(f"{name},{__name__}:Echo")
    assert [s.name for s in specs] == [name, "echo"]
    assert specs[1].factory is Echo and specs[1].origin == f"{__name__}:Echo"


class Echo(Analysis):
    def analyze(self, datafile: Any) -> dict[str, str]:
        return {"file": str(datafile.relative_filepath)}


class Ported(DataFileStreamReproducer):
    def _get_processing_result_message_for_file(self, datafile: Any, lock: Any) -> Any:
        return None


def test_a_reference_reproducer_class_registers_the_same_way() -> None:
    (spec,) = resolve(f"{__name__}:Ported")
    assert spec.factory is Ported and spec.name == "ported"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            "no-such-analysis",
            r"unknown analysis 'no-such-analysis'; known: .*package\.module:Class",
        ),
        ("no_such_module:X", r"cannot import no_such_module"),
        (f"{__name__}:Missing", r"has no Missing"),
        (f"{__name__}:Echo,{__name__}:Echo", r"'echo' is asked for twice"),
        ("", r"no analysis given"),
    ],
)
def test_finding_fails_with_what_to_fix(names: str, message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        resolve(names)


def test_bad_registrations_say_every_problem() -> None:
    class NoMethod(Analysis):
        pass

    with pytest.raises(RegistrationError) as caught:
        register(
            "Bad Name",
            files="(",
            mode="tape",
            num_cpus=-1,
            resources={"gpu": float("nan")},
            n_actors=0,
            timeout_s=0,
        )(NoMethod)
    text = str(caught.value)
    for problem in (
        "lowercase letters",
        "has no analyze(self, datafile)",
        "not a regular expression",
        "mode must be one of",
        "num_cpus must be a number >= 0",
        "gpu must be a number >= 0",
        "n_actors must be an integer >= 1",
        "timeout_s must be a number of seconds > 0",
    ):
        assert problem in text, (problem, text)
    assert Resources(num_cpus=1).problems() == []


def test_one_name_two_classes_is_refused() -> None:
    name = unique("twice")

    @register(name)
    class First(Analysis):
        def analyze(self, datafile: Any) -> None:
            return None

    class Second(Analysis):
        def analyze(self, datafile: Any) -> None:
            return None

    with pytest.raises(RegistrationError, match=r"registered twice: by .*First and by .*Second"):
        register(name)(Second)


@pytest.fixture
def lab_package(tmp_path: Path) -> Iterator[str]:
    """An installed package (as pip lays it out: module + dist-info with entry points)
    that ships an analysis; removed from the path afterwards."""
    package = unique("lab").replace("-", "_")
    (tmp_path / f"{package}.py").write_text(
        textwrap.dedent(
            """
            from analyses import Analysis

            class Peaks(Analysis):
                version = "3.1"

                def analyze(self, datafile):
                    return {"peaks": []}
            """
        )
    )
    info = tmp_path / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[ray_reproducer.analyses]\n{package}-peaks = {package}:Peaks\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield package
    sys.path.remove(str(tmp_path))
    sys.modules.pop(package, None)


def test_an_installed_package_ships_analyses_by_entry_point(lab_package: str) -> None:
    name = f"{lab_package}-peaks"
    assert known()[name] == f"entry point {lab_package}:Peaks"
    (spec,) = resolve(name)
    assert (spec.name, spec.version, spec.factory.__name__) == (name, "3.1", "Peaks")


def test_attach_keeps_a_file_inside_the_output_folder_only(tmp_path: Path) -> None:
    analysis = Analysis()
    analysis.output_dir = tmp_path
    check = analysis.attach("plots/run/a.h5/x.png", b"png")
    assert (tmp_path / "plots/run/a.h5/x.png").read_bytes() == b"png"
    assert check == {
        "path": str(tmp_path / "plots/run/a.h5/x.png"),
        "size": 3,
        "sha256": hashlib.sha256(b"png").hexdigest(),
    }
    for unsafe in ("../x.png", "/etc/x.png", "a/../../x.png", ""):
        with pytest.raises(ValueError, match="relative path inside the output folder"):
            analysis.attach(unsafe, b"no")
    for logs in ("LOGS/x.png", "./LOGS/results_produced_to_t.csv"):
        with pytest.raises(ValueError, match="may not go under LOGS/"):
            analysis.attach(logs, b"no")
    (tmp_path / "away").symlink_to(tmp_path.parent, target_is_directory=True)
    with pytest.raises(ValueError, match="resolves outside"):
        analysis.attach("away/x.png", b"no")
    (tmp_path / "away").unlink()
    assert analysis.take_attachments() == {"plots/run/a.h5/x.png": b"png"}
    assert analysis.take_attachments() == {}  # handed over once
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["x.png"]
