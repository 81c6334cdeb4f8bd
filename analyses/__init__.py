"""Analyses: the one-method base class, the registry, and the built-in analyses.

Write an analysis as a plain class (:class:`Analysis`), register it under a stable name
with what it needs (:func:`register`), and find it by name from the command line, from
an installed package's ``ray_reproducer.analyses`` entry points, or as
``package.module:Class`` (:func:`resolve`).
"""

from analyses.base import Analysis, AnalysisSpec, BadInput, RegistrationError, Resources
from analyses.registry import ENTRY_POINT_GROUP, known, make_spec, register, resolve

__all__ = [
    "ENTRY_POINT_GROUP",
    "Analysis",
    "AnalysisSpec",
    "BadInput",
    "RegistrationError",
    "Resources",
    "known",
    "make_spec",
    "register",
    "resolve",
]
