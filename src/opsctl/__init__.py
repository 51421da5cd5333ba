"""opsctl: executable runbooks."""

import sys as _sys

__version__ = "0.1.0"

# Started as the CLI (``opsctl`` or ``python -m opsctl``)?  Then Ctrl-C from here until the CLI's
# error handling is in place (cli.main) exits 130 with one line instead of a KeyboardInterrupt
# traceback from the middle of an import.  Importing opsctl as a library changes nothing.
if _sys.argv and (_sys.argv[0] == "-m" or _sys.argv[0].endswith(("/opsctl", "\\opsctl", "opsctl.exe"))):
    import _signal  # the C module: `signal` would first import enum (slow, and interruptible)

    def _early_sigint(signum: int, frame: object) -> None:
        import os

        try:
            _sys.stderr.write("interrupted\n")
            _sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os._exit(130)

    _signal.signal(_signal.SIGINT, _early_sigint)
