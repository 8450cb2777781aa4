"""What the data readers raise and warn."""


class DataError(ValueError):
    """A data source is missing, unreadable or malformed; the message says where and what."""


class DataWarning(UserWarning):
    """A data source was read, but not as-is (rows skipped, images converted)."""
