"""The demo's business logic, written as ordinary request-bound Flask code."""
