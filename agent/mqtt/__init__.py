"""MQTT delivery: topic names, the transport seam, and the outbox publisher."""
