"""An analysis shipped by a lab's own package: registered only by its entry point."""

from analyses import Analysis


class LineCount(Analysis):
    version = "2.0"

    def analyze(self, datafile):
        return {"lines": datafile.bytestring.count(b"\n")}
