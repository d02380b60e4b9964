"""The one exception type for bad user input; the CLI turns it into a one-line error."""


class HT2Error(Exception):
    """A problem with what the user asked for or gave (a file, a name, a value).

    The message is a complete sentence for the user: what was wrong and what to do.
    """
