"""``python -m opsctl`` and the ``opsctl`` console script.

Ctrl-C while the CLI is still being imported (the first ~0.2 s) exits 130 with one line, never a
KeyboardInterrupt traceback; ``opsctl.cli.main.main`` restores the default handler once its error
handling is in place.
"""

import os
import signal
import sys


def _early(signum: int, frame: object) -> None:
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(130)


def entry() -> None:
    signal.signal(signal.SIGINT, _early)
    from opsctl.cli.fastpath import main as fast

    fast(sys.argv[1:])  # plain `run` and `validate` command lines; returns when Typer is needed
    from opsctl.cli.main import main

    main()


if __name__ == "__main__":
    entry()
