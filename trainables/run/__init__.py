"""The trial runtime: engine, Ray Train worker loop, rank pool, user loops, control channel."""
