"""One exception type whose message is the whole story: the CLI prints it as one line."""

import functools
import sys


class BiosaeError(Exception):
    """A user-facing error: bad config, bad data file, corrupt artifact. Message names the culprit."""


def one_line_errors(main):
    """Run ``main`` so that a BiosaeError ends the process with its one-line message, exit code 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except BiosaeError as error:
            print(f"biosae error: {error}", file=sys.stderr)
            sys.exit(1)

    return wrapper
