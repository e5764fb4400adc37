"""Pure ingest logic: item identity, validation against the project, featurisation."""
