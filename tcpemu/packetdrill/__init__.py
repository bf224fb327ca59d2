"""Run packetdrill scripts with tcpemu: against the Linux kernel in a throwaway lab, or over any link.

:func:`run_script` runs one script and returns its :class:`Result`;
:func:`run_scripts` runs several and sums them up.  ``tcpemu packetdrill``
is the command line.  See docs/packetdrill.md for what is supported.
"""

from __future__ import annotations

from .parse import ScriptError, Unsupported, parse_script

__all__ = ["ScriptError", "Unsupported", "parse_script"]
