"""Position tapes: reading (JSON Lines, Avro), merging by event time, replay through the engine."""
