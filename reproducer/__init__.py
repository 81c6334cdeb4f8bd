"""ray-reproducer: turn data files streamed as OpenMSIStream chunks into analysis results.

The data path, in the order data flows through it:

- :mod:`reproducer.chunk`: the chunk message wire format (decode, encode, keys);
- :mod:`reproducer.reassembly`: chunks -> whole files, in memory, on disk or both;
- :mod:`reproducer.offsets`: which consumed offsets are safe to commit;
- :mod:`reproducer.upload` / :mod:`reproducer.download`: files -> topic -> files;
- :mod:`reproducer.config`: OpenMSIStream INI config files;
- :mod:`reproducer.results`: strict JSON out, and results topics read back as rows.
"""

from importlib.metadata import PackageNotFoundError, version

from reproducer.chunk import (
    DEFAULT_CHUNK_SIZE,
    DataFileChunk,
    decode_value,
    encode_value,
    make_chunk,
    result_key,
)
from reproducer.config import KafkaConfig, load_config
from reproducer.errors import (
    ChunkDecodeError,
    ChunkHashError,
    ConfigError,
    OutputUnavailable,
    ReproducerError,
    UnsafePathError,
    UploadError,
)
from reproducer.offsets import OffsetTracker
from reproducer.reassembly import (
    AddResult,
    ChunkStatus,
    CompletedFile,
    FailureReason,
    FileFailure,
    Outcome,
    Reassembler,
)
from reproducer.results import ResultSet, read_results

try:
    __version__ = version("ray-reproducer")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# The Ray-based API is imported on first use, so the pure core and the uploader load fast.
_LAZY = {
    "DataFileStreamReproducer": "reproducer.stream_reproducer",
    "MetadataJSONReproducer": "reproducer.stream_reproducer",
    "ProcessingResults": "reproducer.stream_reproducer",
    "PipelineHandle": "reproducer.stream_reproducer",
    "DownloadDataFile": "reproducer.datafile",
    "JSONMessage": "reproducer.datafile",
    "ReproducerMessage": "reproducer.datafile",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reproducer' has no attribute {name!r}")


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "AddResult",
    "ChunkDecodeError",
    "ChunkHashError",
    "ChunkStatus",
    "CompletedFile",
    "ConfigError",
    "DataFileChunk",
    "DataFileStreamReproducer",
    "DownloadDataFile",
    "FailureReason",
    "FileFailure",
    "KafkaConfig",
    "MetadataJSONReproducer",
    "OffsetTracker",
    "Outcome",
    "OutputUnavailable",
    "PipelineHandle",
    "ProcessingResults",
    "Reassembler",
    "ReproducerError",
    "ReproducerMessage",
    "ResultSet",
    "UnsafePathError",
    "UploadError",
    "__version__",
    "decode_value",
    "encode_value",
    "load_config",
    "make_chunk",
    "read_results",
    "result_key",
]
