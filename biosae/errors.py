"""One exception type whose message is the whole story: the CLI prints it as one line."""


class BiosaeError(Exception):
    """A user-facing error: bad config, bad data file, corrupt artifact. Message names the culprit."""
