"""The shape of the reference's metadata-extraction example, ported by changing its import.

It reads the ``[Measurement conditions]`` block of an XRD CSV file and produces it as JSON.
"""

from datetime import datetime

from reproducer import MetadataJSONReproducer


class XRDCSVMetadataReproducer(MetadataJSONReproducer):
    """Metadata of an XRD measurement's CSV header, as JSON."""

    def _get_metadata_dict_for_file(self, datafile):
        lines = datafile.bytestring.decode().split("\n")
        start = lines.index("[Measurement conditions]") + 1
        end = lines.index("[Scan points]")
        metadata = {}
        for line in lines[start:end]:
            key, _, value = line.strip().partition(",")
            if not key:
                continue
            metadata[key] = _parse(value)
        return metadata


def _parse(value):
    """A number, a date (as a timestamp), or the text as it is."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.strptime(value, "%m/%d/%Y %I:%M:%S %p").timestamp()
    except ValueError:
        return value


def main(args=None):
    XRDCSVMetadataReproducer.run_from_command_line(args)


if __name__ == "__main__":
    main()
