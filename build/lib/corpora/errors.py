"""The one exception type that means "the user gave us something we cannot use".

It lives in the lowest layer (corpora) so that every layer above can raise it
without reaching back up. The CLI turns it into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, an empty corpus, an unknown name, a bad config key."""
