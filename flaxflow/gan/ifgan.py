"""IF-GAN's networks and island loss: identity-free expression recognition with a conditional GAN.

G, a U-Net with three self-attention modules (one on the encoder path, one on a skip connection,
one on the decoder path near the output), maps a face to the "average identity" face with the
same expression; D, a PatchGAN, tells the pair (input, average face) from (input, G(input)); E
classifies the expression of the pair. At test time the prediction is E(x, G(x)).

Images inside these modules are floats in [-1, 1] (`flaxflow.gan.pixels`, as DECGAN's; G ends
in tanh). `class_logits` takes the images every model's `class_logits` takes, the flows'
dequantised [-0.5, 0.5). Normalisation is instance or group norm only, so no network keeps batch
statistics and the train state is the parameters alone.
"""

import math
from typing import ClassVar, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flaxflow.conv import Conv, ConvTranspose
from flaxflow.gan import pixels
from flaxflow.models.capabilities import ModelCapabilities

Array = jax.Array
NORMS = ("instance", "group")
CLASSIFIERS = ("cnn", "resnet")
# A 4x4 stride-2 convolution with these pads halves an even side exactly (pix2pix's layers).
_HALVING_PADS = ((1, 1), (1, 1))


class Norm(nn.Module):
  """Instance norm, or group norm with up to `groups` groups (as many as divide the channels)."""
  kind: str = "instance"
  groups: int = 8

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.kind == "instance":
      return nn.InstanceNorm()(x)
    if self.kind == "group":
      return nn.GroupNorm(num_groups=math.gcd(self.groups, x.shape[-1]))(x)
    raise ValueError(f"norm {self.kind!r}: expected one of {', '.join(NORMS)}")


class SelfAttention(nn.Module):
  """SAGAN's self-attention: x + gamma * o, o_i = sum_j softmax_j(q_i . k_j) v_j, with 1x1
  query and key projections to C / `reduction` channels and a 1x1 value projection to C.

  gamma starts at 0, so the module starts as the identity and lets the network learn how much
  non-local evidence to mix in.
  """
  reduction: int = 8

  @nn.compact
  def __call__(self, x: Array) -> Array:
    batch, height, width, channels = x.shape
    inner = max(1, channels // self.reduction)
    positions = height * width
    query = Conv(inner, (1, 1), name="query")(x).reshape(batch, positions, inner)
    key = Conv(inner, (1, 1), name="key")(x).reshape(batch, positions, inner)
    value = Conv(channels, (1, 1), name="value")(x).reshape(batch, positions, channels)
    attention = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", query, key), axis=-1)
    out = jnp.einsum("bqk,bkc->bqc", attention, value).reshape(x.shape)
    gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32)
    return x + gamma * out


def check_attention_sites(widths: Sequence[int], sites: Sequence[Optional[int]]) -> None:
  """Sites are encoder levels: 0 is the first 4x4 stride-2 layer's output, len(widths) - 1 the
  bottleneck; a skip or decoder site must be a level with a skip (not the bottleneck)."""
  for name, site, limit in zip(("encoder", "skip", "decoder"), sites,
                               (len(widths), len(widths) - 1, len(widths) - 1)):
    if site is not None and not 0 <= site < limit:
      raise ValueError(f"config.model.attention_{name}={site}: expected a level in 0..{limit - 1}"
                       f" for {len(widths)} generator widths (or None)")


def check_generator_fits(widths: Sequence[int], image_shape: Sequence[int]) -> None:
  """G halves the image once per width and joins each level with its mirror: both sides must
  be multiples of 2 ** len(widths)."""
  factor = 2 ** len(widths)
  if any(side % factor for side in image_shape[:2]):
    raise ValueError(f"config.model.image_shape={tuple(image_shape)}: G's {len(widths)} levels "
                     f"(config.model.generator_widths) halve it {len(widths)} times, so its "
                     f"height and width must be multiples of {factor}")


class UNetGenerator(nn.Module):
  """pix2pix's U-Net: 4x4 stride-2 convolutions down (LeakyReLU 0.2), 4x4 stride-2 transposed
  convolutions up (ReLU), each up output joined with the encoder output of the same size, tanh
  out; norm on every layer but the first and the bottleneck (pix2pix's choice, and a 2x2 or 1x1
  map has no statistics worth normalising).

  `widths[i]` is the width of encoder level i (spatial size H / 2**(i+1)); the decoder mirrors
  them. Self-attention, when `attention`, goes after encoder level `attention_encoder`, on the
  skip from level `attention_skip`, and after the decoder layer that produces level
  `attention_decoder`'s size (None: no module at that site).
  """
  widths: Sequence[int]
  out_channels: int
  attention: bool = True
  attention_encoder: Optional[int] = 1
  attention_skip: Optional[int] = 0
  attention_decoder: Optional[int] = 0
  norm: str = "instance"

  def _attends(self, site: Optional[int], level: int) -> bool:
    return self.attention and site == level

  @nn.compact
  def __call__(self, x: Array) -> Array:
    check_attention_sites(self.widths, (self.attention_encoder, self.attention_skip,
                                        self.attention_decoder))
    last = len(self.widths) - 1
    skips, h = [], x
    for level, width in enumerate(self.widths):
      h = Conv(width, (4, 4), strides=(2, 2), padding=_HALVING_PADS)(
          h if level == 0 else nn.leaky_relu(h, 0.2))
      if 0 < level < last:
        h = Norm(self.norm)(h)
      if self._attends(self.attention_encoder, level):
        h = SelfAttention(name="attention_encoder")(h)
      skips.append(h)
    for level in reversed(range(last)):
      h = Norm(self.norm)(ConvTranspose(self.widths[level], (4, 4), strides=(2, 2))(nn.relu(h)))
      if self._attends(self.attention_decoder, level):
        h = SelfAttention(name="attention_decoder")(h)
      skip = skips[level]
      if self._attends(self.attention_skip, level):
        skip = SelfAttention(name="attention_skip")(skip)
      h = jnp.concatenate([h, skip], axis=-1)
    h = ConvTranspose(self.out_channels, (4, 4), strides=(2, 2))(nn.relu(h))
    return jnp.tanh(h)


class PatchDiscriminator(nn.Module):
  """PatchGAN on a pair of images joined along channels: 4x4 stride-2 convolutions (LeakyReLU
  0.2, norm after the first), then a 3x3 convolution to one logit per patch."""
  widths: Sequence[int]
  norm: str = "instance"

  @nn.compact
  def __call__(self, source: Array, target: Array) -> Array:
    h = jnp.concatenate([source, target], axis=-1)
    for index, width in enumerate(self.widths):
      h = Conv(width, (4, 4), strides=(2, 2), padding=_HALVING_PADS)(h)
      if index > 0:
        h = Norm(self.norm)(h)
      h = nn.leaky_relu(h, 0.2)
    return Conv(1, (3, 3), padding="SAME")(h)[..., 0]


class SmallCNN(nn.Module):
  """Per width: a 3x3 convolution and a 3x3 stride-2 one, each normalised and ReLU'd; then the
  mean over positions."""
  widths: Sequence[int]
  norm: str = "instance"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for width in self.widths:
      for strides in ((1, 1), (2, 2)):
        x = nn.relu(Norm(self.norm)(Conv(width, (3, 3), strides=strides, padding="SAME")(x)))
    return x.mean(axis=(1, 2))


class Bottleneck(nn.Module):
  """ResNet's bottleneck block (1x1, 3x3 with the stride, 1x1 to 4x the width), group norm."""
  width: int
  strides: Tuple[int, int] = (1, 1)
  norm: str = "group"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = nn.relu(Norm(self.norm)(Conv(self.width, (1, 1), use_bias=False)(x)))
    h = nn.relu(Norm(self.norm)(Conv(self.width, (3, 3), strides=self.strides, padding="SAME",
                                     use_bias=False)(h)))
    h = Norm(self.norm)(Conv(4 * self.width, (1, 1), use_bias=False)(h))
    if x.shape != h.shape:
      x = Norm(self.norm)(Conv(4 * self.width, (1, 1), strides=self.strides, use_bias=False)(x))
    return nn.relu(x + h)


class ResNet(nn.Module):
  """A bottleneck ResNet from scratch (stage_sizes (3, 4, 23, 3): ResNet-101): a 3x3 stem (small
  faces have no pixels to spare for ImageNet's 7x7 stride-2 stem and pooling), stages of
  bottleneck blocks doubling the width and halving the size, then the mean over positions."""
  stage_sizes: Sequence[int]
  width: int = 64
  norm: str = "group"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(Norm(self.norm)(Conv(self.width, (3, 3), padding="SAME", use_bias=False)(x)))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        x = Bottleneck(self.width * 2 ** stage, strides, self.norm)(x)
    return x.mean(axis=(1, 2))


class ExpressionClassifier(nn.Module):
  """E: the images given (one, or a pair) joined along channels, a trunk, a linear feature
  layer of `feature_size` (what the island loss pulls together: linear, so that the centres can
  point anywhere and their cosines reach -1), and the class logits of its ReLU."""
  num_classes: int
  kind: str = "cnn"
  widths: Sequence[int] = (32, 64, 128)
  stage_sizes: Sequence[int] = (3, 4, 23, 3)
  resnet_width: int = 64
  feature_size: int = 64
  norm: str = "instance"

  @nn.compact
  def __call__(self, *images: Array) -> Tuple[Array, Array]:
    x = jnp.concatenate(images, axis=-1)
    if self.kind == "cnn":
      x = SmallCNN(self.widths, self.norm)(x)
    elif self.kind == "resnet":
      x = ResNet(self.stage_sizes, self.resnet_width, self.norm)(x)
    else:
      raise ValueError(f"config.model.classifier_kind={self.kind!r}: expected one of "
                       f"{', '.join(CLASSIFIERS)}")
    features = nn.Dense(self.feature_size)(x)
    return nn.Dense(self.num_classes)(nn.relu(features)), features


class _ExpressionModel(nn.Module, ModelCapabilities):
  """What IF-GAN and its baseline share: the data's shape and classes, and E's settings."""
  image_shape: Tuple[int, ...]
  num_classes: int
  classifier_kind: str = "cnn"
  classifier_widths: Sequence[int] = (32, 64, 128)
  stage_sizes: Sequence[int] = (3, 4, 23, 3)
  resnet_width: int = 64
  feature_size: int = 64
  norm: str = "instance"

  is_classifier: ClassVar[bool] = True
  has_likelihood: ClassVar[bool] = False

  def _expression_classifier(self) -> ExpressionClassifier:
    return ExpressionClassifier(self.num_classes, self.classifier_kind, self.classifier_widths,
                                self.stage_sizes, self.resnet_width, self.feature_size,
                                self.norm)


class IFGAN(_ExpressionModel):
  """G, D and E (parameters "generator", "discriminator", "classifier"); images in [-1, 1]."""
  generator_widths: Sequence[int] = (32, 64, 128, 128)
  attention: bool = True
  attention_encoder: Optional[int] = 1
  attention_skip: Optional[int] = 0
  attention_decoder: Optional[int] = 0
  discriminator_widths: Sequence[int] = (32, 64, 128)

  networks: ClassVar[Tuple[str, ...]] = ("generator", "discriminator", "classifier")

  def setup(self):
    self.generator = UNetGenerator(self.generator_widths, self.image_shape[-1], self.attention,
                                   self.attention_encoder, self.attention_skip,
                                   self.attention_decoder, self.norm)
    self.discriminator = PatchDiscriminator(self.discriminator_widths, self.norm)
    self.classifier = self._expression_classifier()

  def __call__(self, x: Array) -> Tuple[Array, Array, Array]:
    """Every network once (for `init`): G(x), D's patch logits and E's logits of (x, G(x))."""
    generated = self.generate(x)
    return generated, self.discriminate(x, generated), self.classify(x, generated)[0]

  def generate(self, x: Array) -> Array:
    return self.generator(x)

  def discriminate(self, source: Array, target: Array) -> Array:
    return self.discriminator(source, target)

  def classify(self, source: Array, target: Array) -> Tuple[Array, Array]:
    """E's (logits, features) of the pair."""
    return self.classifier(source, target)

  def class_logits(self, x: Array) -> Array:
    """The prediction E(x, G(x)) for the flows' images x in [-0.5, 0.5)."""
    x = pixels.from_flow_range(x)
    return self.classify(x, self.generate(x))[0]


class ExpressionBaseline(_ExpressionModel):
  """E alone on the raw image (the paper's baseline row): parameters "classifier" only."""
  networks: ClassVar[Tuple[str, ...]] = ("classifier",)

  def setup(self):
    self.classifier = self._expression_classifier()

  def __call__(self, x: Array) -> Array:
    return self.classify(x)[0]

  def classify(self, x: Array) -> Tuple[Array, Array]:
    return self.classifier(x)

  def class_logits(self, x: Array) -> Array:
    return self.classify(pixels.from_flow_range(x))[0]


MODELS = {"ifgan": IFGAN, "expression_baseline": ExpressionBaseline}


def target_faces(table: Array, labels: Array, intensities: Optional[Array] = None) -> Array:
  """Each example's target face from a `table` (classes, levels, H, W, C): with one level, its
  class's face; with several (renders at intensities evenly from 0 to 1), the linear
  interpolation between the two around the example's intensity."""
  levels = table.shape[1]
  if levels == 1:
    return table[labels, 0]
  if intensities is None:
    raise ValueError(f"a table of {levels} intensity levels needs the examples' intensities")
  position = jnp.clip(intensities, 0.0, 1.0) * (levels - 1)
  lower = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, levels - 2)
  fraction = (position - lower).reshape(-1, *[1] * (table.ndim - 2))
  return (1.0 - fraction) * table[labels, lower] + fraction * table[labels, lower + 1]


def island_loss(features: Array, labels: Array, centres: Array, alpha: float) -> Array:
  """The island loss: mean_i ||x_i - c_{y_i}||^2 + alpha * sum_{j != k} (cos(c_j, c_k) + 1).

  The pull towards the class centre is averaged over the batch (the paper sums it), so that its
  weight does not depend on the batch size or on how the batch is split over devices.
  """
  pull = jnp.mean(jnp.sum((features - centres[labels]) ** 2, axis=-1))
  unit = centres / jnp.maximum(jnp.linalg.norm(centres, axis=-1, keepdims=True), 1e-12)
  cosines = unit @ unit.T
  apart = 1.0 - jnp.eye(centres.shape[0], dtype=cosines.dtype)
  return pull + alpha * jnp.sum((cosines + 1.0) * apart)
