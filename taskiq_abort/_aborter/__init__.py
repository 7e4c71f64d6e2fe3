"""The aborter half: record a request, tell the holders, wait for them or settle the outcome."""
