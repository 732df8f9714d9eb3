"""Platform-side ingest (``edge-agent ingest``): MQTT -> InfluxDB, at least once, idempotent.

``schema`` (payload validation) and ``points`` (record -> point) are pure; ``service`` holds
the MQTT client and the batching, retrying, dead-lettering and acknowledging pipeline;
``sink`` is the InfluxDB seam. Nothing is re-exported here, so that importing the pure
parts does not pull in paho.
"""
