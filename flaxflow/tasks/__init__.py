"""Model families as tasks of the shared training loop (`flaxflow.loop.Task`)."""
