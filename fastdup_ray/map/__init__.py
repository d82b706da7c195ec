"""The map side: listing and reading inputs by kind, decode, embed, and the shard each unit writes."""
