"""The languages a job may be compiled as, by the preprocessed form a server compiles
(the judge rewrites ``-x`` to it, and names the server's copy of the source by it)."""

from __future__ import annotations

PREPROCESSED_LANGUAGE = {
    "c": "cpp-output",
    "cpp-output": "cpp-output",
    "c++": "c++-cpp-output",
    "c++-cpp-output": "c++-cpp-output",
    "objective-c": "objective-c-cpp-output",
    "objc-cpp-output": "objective-c-cpp-output",
    "objective-c-cpp-output": "objective-c-cpp-output",
    "objective-c++": "objective-c++-cpp-output",
    "objective-c++-cpp-output": "objective-c++-cpp-output",
}
"""A ``-x`` language -> the language of its preprocessed source."""
SUFFIX_OF_LANGUAGE = {
    "cpp-output": ".i",
    "c++-cpp-output": ".ii",
    "objective-c-cpp-output": ".mi",
    "objective-c++-cpp-output": ".mii",
}
"""A preprocessed language -> the suffix of its source file."""
PREPROCESSED_SUFFIX = {
    "c": ".i", "i": ".i",
    "cc": ".ii", "cpp": ".ii", "cxx": ".ii", "cp": ".ii", "c++": ".ii", "C": ".ii", "ii": ".ii",
    "m": ".mi", "mi": ".mi",
    "mm": ".mii", "M": ".mii", "mii": ".mii",
}  # fmt: skip
"""A source's extension -> the suffix of its preprocessed file (distcc's ``dcc_preproc_exten``)."""
