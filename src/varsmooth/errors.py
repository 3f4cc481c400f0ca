"""The one exception type for bad user input.

Library code raises :class:`InputError` (a ``ValueError``) with one line naming the bad value and what is allowed;
the CLI turns it into that line on stderr and exit code 2, with no traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a value, a file, a config key. The message is one line."""
