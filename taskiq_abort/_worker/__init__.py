"""The worker half: register starts, hear aborts, stop the body, confirm."""
