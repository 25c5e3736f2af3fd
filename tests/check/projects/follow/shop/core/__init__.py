from .audit import audit_event
from .audit import Auditor

__all__ = ["Auditor", "audit_event"]
