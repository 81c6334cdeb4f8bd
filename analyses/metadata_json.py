"""``metadata-json``: the ``[Measurement conditions]`` block of an XRD CSV file, as JSON.

This is the reference's metadata-extraction example, with its behaviour: every
``key,value`` line of the block becomes ``{key: value}`` (values stay text; an empty value
is ``null``; a line with several values gives a list), and
``metadata_message_generated_at`` records when (``%m/%d/%Y, %H:%M:%S``). Example::

    [Measurement conditions]          {"Sample name": "quartz",
    Sample name,quartz          ->     "Start angle": "10.0",
    Start angle,10.0                   "Slits": ["0.5", null, "1"],
    Slits,0.5,,1                       "metadata_message_generated_at": "11/27/2026, 13:02:03"}
    [Scan points]
    ...

It is registered as an analysis, and :class:`XRDCSVMetadataReproducer` is the same thing
as a ``MetadataJSONReproducer``: ``python -m analyses.metadata_json --config ...``.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from analyses.base import Analysis, BadInput
from analyses.registry import register
from reproducer.stream_reproducer import MetadataJSONReproducer

__all__ = ["MetadataJSON", "XRDCSVMetadataReproducer", "measurement_conditions"]

log = logging.getLogger(__name__)

START, END = "[Measurement conditions]", "[Scan points]"


def measurement_conditions(text: str, name: str = "the file") -> dict[str, Any]:
    """The block's keys and values, plus when they were extracted."""
    lines = [line.strip() for line in text.split("\n")]
    try:
        start = lines.index(START)
    except ValueError:
        raise BadInput(f"{name} has no {START} block to take metadata from") from None
    if END in lines[:start]:
        raise BadInput(f"{name} has its {END} block before {START}")
    metadata: dict[str, Any] = {}
    for line in lines[start + 1 :]:
        if line == END:
            break
        key, *values = line.split(",")
        if not values:
            continue  # not a key,value line
        found = [value if value else None for value in values]
        metadata[key] = found[0] if len(found) == 1 else found
    if not metadata:
        log.warning("the %s block of %s holds no keys or values", START, name)
    metadata["metadata_message_generated_at"] = datetime.datetime.now().strftime(
        "%m/%d/%Y, %H:%M:%S"
    )
    return metadata


@register("metadata-json", version="1", files=r"(?i).*\.csv$", num_cpus=0.25)
class MetadataJSON(Analysis):
    """The measurement conditions of an XRD CSV file."""

    def analyze(self, datafile: Any) -> dict[str, Any]:
        name = str(datafile.relative_filepath)
        try:
            text = datafile.bytestring.decode()
        except UnicodeDecodeError as exc:
            raise BadInput(f"{name} is not UTF-8 text: {exc}") from exc
        return measurement_conditions(text, name)


class XRDCSVMetadataReproducer(MetadataJSONReproducer):
    """The same extraction as a reference-style reproducer (key and JSON value as the
    reference's example produces them)."""

    def _get_metadata_dict_for_file(self, datafile: Any) -> dict[str, Any]:
        return MetadataJSON().analyze(datafile)


def main(args: list[str] | None = None) -> None:
    XRDCSVMetadataReproducer.run_from_command_line(args)


if __name__ == "__main__":
    main()
