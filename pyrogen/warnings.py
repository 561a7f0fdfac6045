"""pyrogen's own warning category, so tests can turn exactly these into errors."""


class PyrogenWarning(UserWarning):
    """Something a pyrogen user should look at: a doubtful input, a fallback taken."""
