"""The workflow service: five small services over NATS JetStream (see docs/architecture.md)."""
