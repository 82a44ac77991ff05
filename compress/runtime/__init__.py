"""Process-level facilities: devices, data-parallel ranks and the allocator."""
