"""Hard limits on everything a peer can claim. Checked before a body is read."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds for one request or reply.

    The defaults admit any real compile job (a 256 MiB preprocessed file is
    far beyond what real builds send) while keeping a hostile peer from
    making us allocate more than a few hundred MiB per connection.
    """

    max_argc: int = 4096
    max_arg_bytes: int = 64 * KiB
    max_argv_total_bytes: int = 1 * MiB
    max_source_bytes: int = 256 * MiB
    max_object_bytes: int = 256 * MiB
    max_output_bytes: int = 16 * MiB
    """Each of the compiler's stderr and stdout in a reply."""
    max_files: int = 20_000
    """Pump mode: ``NFIL``, the files and links of one request (a large C++ translation
    unit reads a few thousand headers)."""
    max_pump_bytes: int = 512 * MiB
    """Pump mode: all of one request's files together, inflated."""
    max_path_bytes: int = 4096
    """Pump mode: a ``CDIR``, ``NAME`` or ``LINK`` (Linux's PATH_MAX)."""

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"limit {name} must be a non-negative int, got {value!r}")
