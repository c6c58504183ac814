"""EmotionSet: facial-expression datasets merged into one TFDS dataset (`emotion_set`).

Importing this package registers the builder with TFDS. Build with
`python -m data.emotion_set --manual_dir DIR` (see `builder.MANUAL_DOWNLOAD_INSTRUCTIONS`).
"""

from flaxflow.data.emotion_set.builder import EmotionSet, build

__all__ = ["EmotionSet", "build"]
