"""Builds the synthetic faces, or draws a preview grid of them.

    python -m data.synthetic_faces [--data_dir DIR] [--config 48 ...]
    python -m data.synthetic_faces --preview faces.png [--size 48]
"""

import argparse

from flaxflow.data.synthetic_faces import builder
from flaxflow.data.synthetic_faces import preview


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m flaxflow.data.synthetic_faces",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sizes = [str(size) for size in builder.IMAGE_SIZES]
  parser.add_argument("--data_dir", default=None,
                      help="where to write the dataset (default: TFDS's, ~/tensorflow_datasets)")
  parser.add_argument("--config", action="append", choices=sizes,
                      help="image size to build; repeat for several (default: all)")
  parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
  parser.add_argument("--preview", metavar="PNG",
                      help="write a grid (rows: people, their low intensity, the average person, "
                      "dataset pose and light; columns: the 7 classes) instead of building")
  parser.add_argument("--size", type=int, choices=builder.IMAGE_SIZES,
                      default=builder.DEFAULT_IMAGE_SIZE, help="image size of the preview")
  parser.add_argument("--seed", type=int, default=builder.DEFAULT_SEED,
                      help="seed the people and images are drawn from")
  args = parser.parse_args(argv)
  if args.seed < 0:
    parser.error(f"--seed must be non-negative, got {args.seed}")
  if args.preview:
    preview.write_preview(args.preview, size=args.size, seed=args.seed)
    print(f"preview: {args.preview}")
    return
  for dataset in builder.build(args.data_dir, [int(size) for size in args.config or sizes],
                               overwrite=args.overwrite, seed=args.seed):
    print(f"{dataset.name}/{dataset.builder_config.name}: {dataset.data_dir}")


if __name__ == "__main__":
  main()
