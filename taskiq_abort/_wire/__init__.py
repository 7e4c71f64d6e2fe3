"""The wire format: Redis keys and the messages on the control channels (docs/protocol.md)."""
