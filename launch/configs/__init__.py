"""ml_collections configs for `python -m launch.train --config=launch/configs/<name>.py`."""
