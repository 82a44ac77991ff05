"""What a model costs and how well it ranks: evaluation protocols, metrics, FLOPs, latency."""
