"""Builds EmotionSet: `python -m data.emotion_set --manual_dir DIR [--data_dir DIR]`."""

import argparse

from flaxflow.data.emotion_set import assemble
from flaxflow.data.emotion_set import builder


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m flaxflow.data.emotion_set", description=__doc__,
      epilog=builder.MANUAL_DOWNLOAD_INSTRUCTIONS,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--manual_dir", required=True,
                      help="folder holding the datasets in their native layouts")
  parser.add_argument("--data_dir", default=None,
                      help="where to write the dataset (default: TFDS's, ~/tensorflow_datasets)")
  parser.add_argument("--config", action="append", choices=["48", "64"],
                      help="image size to build; repeat for several (default: both)")
  parser.add_argument("--skip_bad_records", action="store_true",
                      help="leave bad input out (listed in the metadata) instead of failing")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  args = parser.parse_args(argv)
  try:
    built = builder.build(args.manual_dir, args.data_dir, args.config or ["48", "64"],
                          skip_bad_records=args.skip_bad_records, overwrite=args.overwrite)
  except (assemble.BadInputError, FileNotFoundError) as error:
    raise SystemExit(f"EmotionSet not built: {error}") from error
  for dataset in built:
    print(f"{dataset.name}/{dataset.builder_config.name}: {dataset.data_dir}")


if __name__ == "__main__":
  main()
