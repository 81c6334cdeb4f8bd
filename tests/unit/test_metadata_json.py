"""The metadata-json analysis: the reference example's behaviour on XRD CSV files."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pytest

from analyses import BadInput, resolve
from analyses.metadata_json import MetadataJSON

XRD = """Some preamble,x
[Measurement conditions]
Sample name,quartz
Start angle,10.0
Comment,
Slits,0.5,,1
[Scan points]
Angle,Intensity
10.0,3
"""


@dataclass
class File:
    bytestring: bytes
    relative_filepath: PurePosixPath = field(default_factory=lambda: PurePosixPath("xrd/a.csv"))


def test_the_block_becomes_json_as_in_the_reference() -> None:
    before = datetime.datetime.now().replace(microsecond=0)
    result = MetadataJSON().analyze(File(XRD.encode()))
    stamp = datetime.datetime.strptime(
        result.pop("metadata_message_generated_at"), "%m/%d/%Y, %H:%M:%S"
    )
    assert before <= stamp <= datetime.datetime.now()
    assert result == {
        "Sample name": "quartz",
        "Start angle": "10.0",  # values stay text, as in the reference
        "Comment": None,
        "Slits": ["0.5", None, "1"],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"Angle,Intensity\n1,2\n", r"xrd/a\.csv has no \[Measurement conditions\] block"),
        (b"[Scan points]\n[Measurement conditions]\n", r"\[Scan points\] block before"),
        (b"\xff\xfe[Measurement", r"not UTF-8 text"),
    ],
)
def test_files_without_the_block_fail_clearly(text: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        MetadataJSON().analyze(File(text))


def test_it_is_found_by_name_for_csv_files() -> None:
    (spec,) = resolve("metadata-json")
    assert spec.factory is MetadataJSON and spec.files == r"(?i).*\.csv$"
