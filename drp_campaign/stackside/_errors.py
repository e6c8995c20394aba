"""The one error type the stack-side CLI turns into a one-line message and a non-zero exit."""


class StacksideError(RuntimeError):
    """An infrastructure error or bad argument: the message names what and what to do."""
