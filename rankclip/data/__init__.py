"""Data: the demo corpus generator and webdataset shard helpers."""
