"""Process plumbing: devices, shards, progress display, allocator tuning."""
