"""What the store raises when a caller names something it does not hold."""


class AuditNotFound(LookupError):
    """No audit with that id (or id prefix)."""


class SubjectNotFound(LookupError):
    """No subject matches (or, for a key, several do)."""
