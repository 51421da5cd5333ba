"""The one exception of the kit: a server cannot be started here (binary or package missing)."""


class Unavailable(RuntimeError):
    """A server of the rehearsal kit cannot run on this machine; the message says what to install.
    The pytest plugin turns it into a skip with that reason, ``opsctl rehearse`` into a skip line."""
