"""The base of the errors an operator can act on; the CLI prints their message, not a traceback."""


class DrpError(RuntimeError):
    """A failure whose message names the site, step, hop or file and what to do."""
