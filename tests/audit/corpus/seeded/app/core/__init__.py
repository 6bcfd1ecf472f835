from .retry import connect_with_retry as connect
from .retry import summarise_sync

__all__ = ["connect", "summarise_sync"]
