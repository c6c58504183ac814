"""Settings shared by every training config; each config file overrides what differs."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = "digits"  # data.datasets.load's name: digits, mnist, cifar10, emotion_set/64.
  config.data_dir = ml_collections.config_dict.placeholder(str)  # Where the dataset's files are.
  # Options of data.datasets.load for this dataset beyond its name, e.g. synthetic_faces'
  # min_intensity.
  config.dataset_options = ml_collections.ConfigDict()
  # False: never use the network; mnist/cifar10 then read data_dir's archives or name the missing
  # files at once (TFDS's download retries take minutes to fail without a network).
  config.download = True
  config.eval_split = "test"
  config.seed = 0
  config.n_bits = 8  # Bits per pixel that the model sees; bits/dim are measured at this depth.
  config.batch_size = 64  # Global: split over all devices of all processes.
  config.eval_batch_size = 256  # Per process.
  config.num_steps = 100_000
  config.class_loss_weight = 0.3  # Classifier only: L_cond + weight * L_class.
  # Weight of the squared error of the image decoded with f's deepest latent z1 set to zero
  # (objectives.loss_and_metrics): trains the model for transfer with z1 zeroed, as the
  # classifier paper does for its cleaner faces (IV-D). 0: off, the likelihood alone.
  config.zero_deepest_weight = 0.0
  config.ema_decay = 0.0  # Polyak averaging of the parameters for sampling and evaluation; 0: off.
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adamax", learning_rate=1e-3, warmup_steps=1000, schedule="constant",
      grad_clip_norm=50.0, b1=0.9, b2=0.999, eps=1e-8))
  config.log_every = 100
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3
  config.sample_every = 5000
  config.samples_per_class = 8
  config.sample_temperature = 0.7
  config.eval_every = 0  # 0: evaluate only at the end.
  config.max_consecutive_nonfinite = 20
  config.model = ml_collections.ConfigDict()  # flaxflow.models.create's config: name + arguments.
  return config


def cpu_config() -> ml_collections.ConfigDict:
  """`base_config` for runs of CPU minutes: adamax at 2e-3 after 100 warm-up steps with cosine
  decay, EMA 0.999."""
  config = base_config()
  config.ema_decay = 0.999
  config.optimizer.learning_rate = 2e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.schedule = "cosine"
  return config


# Fields only the flows read: a GAN config leaves them out.
FLOW_FIELDS = ("n_bits", "class_loss_weight", "ema_decay", "samples_per_class",
               "sample_temperature", "eval_every")


def gan_config() -> ml_collections.ConfigDict:
  """`base_config` without the flows' fields, with the GAN papers' optimizer: Adam at 2e-4,
  betas (0.5, 0.999), constant, no warm-up and no clipping (one Adam per network)."""
  config = base_config()
  for field in FLOW_FIELDS:
    del config[field]
  config.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=2e-4, warmup_steps=0, schedule="constant", grad_clip_norm=0.0,
      b1=0.5, b2=0.999, eps=1e-8))
  return config


def digits_config() -> ml_collections.ConfigDict:
  """`cpu_config` at the scale of the bundled 8x8 digits: 4-bit, 1000 steps."""
  config = cpu_config()
  config.dataset = "digits"
  config.n_bits = 4
  config.eval_batch_size = 360  # The whole test split in one batch.
  config.num_steps = 1000
  config.checkpoint_every = 250
  config.sample_every = 250
  config.samples_per_class = 10
  return config


def accelerator_config(dataset: str, num_steps: int) -> ml_collections.ConfigDict:
  """`base_config` at the papers' scale for a GPU or TPU: 8-bit, batch 64, adamax at 1e-3 after
  5000 warm-up steps, EMA 0.999, samples every 5000 and evaluation every 10,000 steps."""
  config = base_config()
  config.dataset = dataset
  config.n_bits = 8
  config.batch_size = 64
  config.num_steps = num_steps
  config.ema_decay = 0.999
  config.optimizer.name = "adamax"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 5000
  config.sample_every = 5000
  config.samples_per_class = 8
  config.eval_every = 10_000
  return config
