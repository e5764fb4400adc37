"""Pure dataset logic of the exporter: splits, validation, tables, file formats, manifests."""
