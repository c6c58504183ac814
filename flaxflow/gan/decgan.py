"""DECGAN, the double-encoder conditional GAN of expression synthesis: networks, losses, the
per-class history buffer and one train step.

E1 encodes a face's identity into z; E2 reads an expression image into class probabilities
p(l) over the expressions; G1(z, l) draws the face of z with the expression of l, and
G2(E1(G1(...)), l') maps it back with the source's label feature l' for the cycle loss. D
judges patches of an image. The layers follow the paper's Tables 1 and 2 (widths and kernels
configurable, so that small images can use smaller ones); encoders and generators use instance
norm, as the paper says.

Each way this code may leave the paper is a field of `DECGAN` or `LossWeights`, with the
paper's setting selectable:

* `identity_code`: z is E1's fully connected output, a vector (the paper's section 3.1,
  "embedding"), or its last feature map ("feature_map", 16 times as many numbers as pixels
  at 32x32 with 64 channels, which keeps where the source's mouth and eyes are).
* `expression_adversary_width` (beyond the paper): a classifier A that reads the expression
  from z, trained on z's labels, while E1 learns to leave it uncertain (A's reading pushed
  towards uniform), as Fader networks remove an attribute from a code. Without it, the
  reconstruction and cycle losses reward a z that still carries the source's expression.
* `upsampling`: the paper's 3x3 stride-2 transposed convolutions ("transposed"), whose
  uneven overlap paints a checkerboard, or nearest-neighbour doubling then a convolution
  ("resize").
* `output` (beyond the paper): G draws every pixel ("drawn"); the output is the input plus
  what G's drawing changes between the source's and the target's condition,
  x + G(z, l) - G(z, l') ("difference"); or G also draws a mask m and the output is
  m * G(z, l) + (1 - m) * x ("mask", GANimation's attention), so that pixels the expression does
  not move stay the input's.
* `generator_sees_image` (beyond the paper): G also reads the image it redraws, average-pooled
  to each layer's size and joined to the layer's input, as GANimation's and StarGAN's
  generators read theirs. A code of at most 128 numbers does not say to the pixel where this
  face's mouth and brows are, and where a drawing misplaces them no mask or weight can make the
  output match the truth.
* `discriminator_condition`: D joins the tiled condition after its first convolution (the
  paper, "concatenated"), or D judges real/fake alone and has a class head, trained on real
  images, that judges the generated image's expression ("class_head", as StarGAN).

Losses of one step (`train_step`): D's adversarial loss on real target images against generated
ones drawn through the history buffer (and its class head's cross-entropy on the real ones);
then E1, E2, G (and A) on G's adversarial loss, the cycle L1, E2's cross-entropy on the real
images, the association of Haeusser et al. (walker + visit) between E1's and E2's embeddings,
and the terms the paper does not have: `target_class` (the generated image classified as its
target, by D's class head or else by E2, which does not learn from it), `reconstruction` (the
L1 of G1(E1(x), l_x) against x, the auto-encoder the paper's section 3.2 mentions), the
expression adversary's, `change` (the L1 of the output against its input, which keeps G from
touching what the expression does not move, as GANimation's penalty on its mask does), and
`paired` (an oracle for ablations: the L1 of a transfer against the true render of the same
face with the target expression, which unpaired training never sees). G's losses see the
conditions as constants: E2 learns from its classification and the association only, so that
p(l) stays a reading of the expression.

Images are float in [-1, 1] inside the networks (`flaxflow.gan.pixels`, as IF-GAN's); the
synthesis functions take and give uint8.
"""

import functools
from typing import Any, Callable, ClassVar, Dict, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxflow import conv
from flaxflow.gan import adversarial, pixels
from flaxflow.models.capabilities import ModelCapabilities

Array = jax.Array
DISCRIMINATOR = "D"
IDENTITY_CODES = ("embedding", "feature_map")
UPSAMPLINGS = ("transposed", "resize")
OUTPUTS = ("drawn", "difference", "mask")
# The mask logit's initial bias (`output="mask"`): G starts by keeping 5% of each pixel's drawing.
_MASK_BIAS = -3.0
DISCRIMINATOR_CONDITIONS = ("concatenated", "class_head")
_EPSILON = 1e-8


def tile(condition: Array, height: int, width: int) -> Array:
  """(B, K) as (B, height, width, K): the condition at every pixel."""
  return jnp.broadcast_to(condition[:, None, None, :],
                          (condition.shape[0], height, width, condition.shape[-1]))


class Encoder(nn.Module):
  """Table 1's encoder: conv k0/1, then k/2 convolutions, each instance-normed with LeakyReLU,
  and the paper's top fully connected layer on the flattened last feature map.

  Returns (feature map, embedding, logits or None): the embedding is the fully connected
  layer's output, what the association compares; with `num_classes` (E2) the logits are a
  linear read-out of it. The top layer sees every position: a spatial mean of instance-normed
  features keeps only each channel's distribution, not where the mouth opens or the brows
  drop, and with it E2 read expressions at 25% after 1000 steps (chance 14%).
  """
  widths: Sequence[int] = (64, 128, 256)
  kernels: Sequence[int] = (7, 3, 3)
  embedding_features: int = 128
  num_classes: Optional[int] = None

  @nn.compact
  def __call__(self, x: Array) -> Tuple[Array, Array, Optional[Array]]:
    for index, (width, kernel) in enumerate(zip(self.widths, self.kernels)):
      # No bias: instance norm subtracts it, so its gradient is zero and Adam would move it
      # by rounding noise alone.
      x = conv.Conv(width, (kernel, kernel), strides=1 if index == 0 else 2, padding="SAME",
                    use_bias=False)(x)
      x = nn.leaky_relu(nn.InstanceNorm()(x), 0.2)
    embedding = nn.Dense(self.embedding_features)(x.reshape(x.shape[0], -1))
    logits = nn.Dense(self.num_classes)(embedding) if self.num_classes else None
    return x, embedding, logits


def average_pool(x: Array, factor: int) -> Array:
  """The mean of each `factor` x `factor` block of (B, H, W, C) images."""
  batch, height, width, channels = x.shape
  return x.reshape(batch, height // factor, factor, width // factor, factor,
                   channels).mean(axis=(2, 4))


def upsample(x: Array) -> Array:
  """Each pixel repeated 2x2 (nearest neighbour)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResizeConv(nn.Module):
  """`upsample`, then a k x k SAME convolution (no bias), without making the doubled map.

  Every output pixel of the pair gets the same taps from the same kind of neighbourhood, so,
  unlike a 3x3 stride-2 transposed convolution, whose pixels get one, two or four taps by
  where they fall, it paints no checkerboard. The pair is itself a stride-2 transposed
  convolution: nearest doubling is the dilated input convolved with a 2x2 box, so the kernel is
  the k x k one summed over every 2x2 block of its taps ((k+1) x (k+1), padded with zeros), and
  each output phase reads 2x2 input pixels instead of 3x3 doubled ones (for k = 3: 4/9 of the
  products). `kernel` has `flax.linen.Conv`'s shape and initialiser.
  """
  features: int
  kernel_size: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    size = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (size, size, x.shape[-1], self.features))
    padded = jnp.pad(kernel, ((1, 1), (1, 1), (0, 0), (0, 0)))
    blocks = padded[1:, 1:] + padded[:-1, 1:] + padded[1:, :-1] + padded[:-1, :-1]
    pad = size // 2 + 1
    return conv.conv_transpose(x, blocks, (2, 2), ((pad, pad), (pad, pad)))


class Generator(nn.Module):
  """Table 1's decoder: k/2 upsamplings to the image size, a k/1 convolution, each
  instance-normed with ReLU, then a k/1 one to `channels` with tanh: (the drawing, None); with
  `mask`, a second k/1 convolution gives a mask in (0, 1) beside it (GANimation's attention).

  The input is concat(z, l): for a vector z (the paper's), a fully connected layer maps it to
  the first feature map, of `start_shape`; for a feature map z, l is tiled over it. Given an
  `image`, each layer (and the output's) also reads it average-pooled to its input's size. An
  upsampling is a 2x2-strided transposed convolution (the paper) or `upsample` then a
  convolution (`upsampling="resize"`).

  Instance norm subtracts each channel's spatial mean, and what a condition tiled over space
  adds through a convolution is (away from the borders) just such a mean: the norm all but
  erases it. With `condition_shifts`, every normed layer adds a learned per-channel shift of l
  before its ReLU (the bias of a conditional instance norm), which the norm cannot remove.
  """
  channels: int
  start_shape: Sequence[int]
  widths: Sequence[int] = (256, 128, 64)
  kernels: Sequence[int] = (3, 3, 7)
  output_kernel: int = 7
  condition_shifts: bool = True
  upsampling: str = "transposed"
  mask: bool = False

  @nn.compact
  def __call__(self, z: Array, condition: Array,
               image: Optional[Array] = None) -> Tuple[Array, Optional[Array]]:
    with_image = lambda x: x if image is None else jnp.concatenate(
        [x, average_pool(image, image.shape[1] // x.shape[1])], axis=-1)
    if z.ndim == 2:
      height, width = self.start_shape
      x = nn.Dense(height * width * self.widths[0])(jnp.concatenate([z, condition], axis=-1))
      x = x.reshape(z.shape[0], height, width, self.widths[0])
    else:
      x = jnp.concatenate([z, tile(condition, z.shape[1], z.shape[2])], axis=-1)
    for index, (width, kernel) in enumerate(zip(self.widths, self.kernels)):
      doubles = index < len(self.widths) - 1
      size = (kernel, kernel)
      x = with_image(x)
      if doubles and self.upsampling == "resize":
        x = ResizeConv(width, kernel)(x)
      else:
        x = conv.ConvTranspose(width, size, strides=(2, 2) if doubles else (1, 1),
                               padding="SAME", use_bias=False)(x)
      x = nn.InstanceNorm()(x)
      if self.condition_shifts:
        x = x + nn.Dense(width)(condition)[:, None, None, :]
      x = nn.relu(x)
    x = with_image(x)
    size = (self.output_kernel, self.output_kernel)
    drawn = jnp.tanh(conv.Conv(self.channels, size, padding="SAME")(x))
    if not self.mask:
      return drawn, None
    mask = nn.sigmoid(conv.Conv(1, size, padding="SAME",
                                bias_init=nn.initializers.constant(_MASK_BIAS))(x))
    return drawn, mask


class Discriminator(nn.Module):
  """Table 2's patch discriminator: conv k/1, then k/2, k/2, k/1 convolutions (LeakyReLU 0.01)
  and a k/1 one to one logit per patch (the paper's sigmoid is in the loss).

  Without `num_classes` the tiled condition is joined to the first convolution's output (the
  paper); with it, D sees the image alone and a fully connected class head on its last hidden
  features gives class logits (StarGAN's auxiliary classifier), so that the condition cannot
  stand in for the image.
  """
  widths: Sequence[int] = (64, 128, 256, 512)
  kernel: int = 7
  num_classes: Optional[int] = None

  @nn.compact
  def __call__(self, x: Array, condition: Array) -> Tuple[Array, Optional[Array]]:
    size = (self.kernel, self.kernel)
    x = nn.leaky_relu(conv.Conv(self.widths[0], size, padding="SAME")(x), 0.01)
    if not self.num_classes:
      x = jnp.concatenate([x, tile(condition, x.shape[1], x.shape[2])], axis=-1)
    for index, width in enumerate(self.widths[1:]):
      strides = 2 if index < 2 else 1
      x = nn.leaky_relu(conv.Conv(width, size, strides=strides, padding="SAME")(x), 0.01)
    patches = conv.Conv(1, size, padding="SAME")(x)[..., 0]
    if not self.num_classes:
      return patches, None
    return patches, nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class ExpressionAdversary(nn.Module):
  """A: the expression classes read from z (flattened), by one hidden layer."""
  width: int
  num_classes: int

  @nn.compact
  def __call__(self, z: Array) -> Array:
    x = nn.leaky_relu(nn.Dense(self.width)(z.reshape(z.shape[0], -1)), 0.2)
    return nn.Dense(self.num_classes)(x)


class DECGAN(ModelCapabilities, nn.Module):
  """The networks; `params` has one entry per network ("E1", "E2", "G1", ["G2"], "D", ["A"]),
  which is how the train state updates them separately. The module docstring lists the
  options beyond the paper. Class-conditional (D and G take labels), without a density."""
  has_likelihood: ClassVar[bool] = False
  image_shape: Sequence[int]
  num_classes: int
  encoder_widths: Sequence[int] = (64, 128, 256)
  encoder_kernels: Sequence[int] = (7, 3, 3)
  encoder_embedding_features: int = 128
  generator_widths: Sequence[int] = (256, 128, 64)
  generator_kernels: Sequence[int] = (3, 3, 7)
  generator_output_kernel: int = 7
  discriminator_widths: Sequence[int] = (64, 128, 256, 512)
  discriminator_kernel: int = 7
  share_generators: bool = True
  condition_shifts: bool = True
  # The options' defaults are the first version's, so that runs from before them load as they
  # trained; every config sets them.
  identity_code: str = "feature_map"
  upsampling: str = "transposed"
  output: str = "drawn"
  discriminator_condition: str = "concatenated"
  expression_adversary_width: int = 0
  generator_sees_image: bool = False

  def setup(self):
    encoder = dict(widths=self.encoder_widths, kernels=self.encoder_kernels,
                   embedding_features=self.encoder_embedding_features)
    self.E1 = Encoder(**encoder)
    self.E2 = Encoder(**encoder, num_classes=self.num_classes)
    reduction = 2 ** (len(self.encoder_widths) - 1)
    generator = dict(channels=self.image_shape[-1],
                     start_shape=(self.image_shape[0] // reduction,
                                  self.image_shape[1] // reduction),
                     widths=self.generator_widths, kernels=self.generator_kernels,
                     output_kernel=self.generator_output_kernel,
                     condition_shifts=self.condition_shifts, upsampling=self.upsampling,
                     mask=self.output == "mask")
    self.G1 = Generator(**generator)
    if not self.share_generators:
      self.G2 = Generator(**generator)
    self.D = Discriminator(widths=self.discriminator_widths, kernel=self.discriminator_kernel,
                           num_classes=(self.num_classes
                                        if self.discriminator_condition == "class_head"
                                        else None))
    if self.expression_adversary_width:
      self.A = ExpressionAdversary(self.expression_adversary_width, self.num_classes)

  @property
  def networks(self) -> Tuple[str, ...]:
    """The names of the networks, as in `params`."""
    return ("E1", "E2", "G1", *(() if self.share_generators else ("G2",)), DISCRIMINATOR,
            *(("A",) if self.expression_adversary_width else ()))

  def __call__(self, x: Array, y: Array):
    """Every network once (for `init`): the transfer of x to y's expression, its cycle, D and
    A."""
    fake = self.transfer(x, y)
    target_condition = self.expression(y)[0]
    outputs = (fake, self.cycle_to_condition(fake, self.expression(x)[0], target_condition),
               self.discriminate(fake, target_condition))
    if self.expression_adversary_width:
      outputs += (self.adversary(self.identity(x)[0]),)
    return outputs

  def identity(self, x: Array) -> Tuple[Array, Array]:
    """E1: (z, embedding) of images x in [-1, 1]; z is the embedding or the last feature map
    (`identity_code`)."""
    feature_map, embedding, _ = self.E1(x)
    return (embedding if self.identity_code == "embedding" else feature_map), embedding

  def expression(self, x: Array) -> Tuple[Array, Array, Array]:
    """E2: (p(l), logits, embedding) of images x in [-1, 1]."""
    _, embedding, logits = self.E2(x)
    return jax.nn.softmax(logits), logits, embedding

  def generate(self, z: Array, condition: Array, image: Optional[Array] = None,
               second: bool = False) -> Array:
    """G1(z, l), or G2 when `second` (G1 itself when the generators are shared): the face G
    draws, every pixel; `image` is the image of z, which G reads with `generator_sees_image`."""
    return self._draw(z, condition, image, second)[0]

  def _draw(self, z: Array, condition: Array, image: Optional[Array],
            second: bool) -> Tuple[Array, Optional[Array]]:
    generator = self.G1 if self.share_generators or not second else self.G2
    if not self.generator_sees_image:
      return generator(z, condition)
    if image is None:
      raise ValueError("generator_sees_image=True: G needs the image of z as well")
    return generator(z, condition, image)

  def redraw(self, x: Array, z: Array, condition: Array, source_condition: Array,
             second: bool = False) -> Array:
    """The output for image x (code z, expression read as `source_condition`) moved to
    `condition`, by `output`: G's drawing ("drawn"); x plus how the drawing changes from
    `source_condition` to `condition`, clipped to [-1, 1] ("difference"); or the drawing where
    G's mask m is on and x elsewhere, m * drawing + (1 - m) * x ("mask")."""
    drawn, mask = self._draw(z, condition, x, second)
    if self.output == "drawn":
      return drawn
    if self.output == "mask":
      return mask * drawn + (1.0 - mask) * x
    return jnp.clip(x + drawn - self.generate(z, source_condition, x, second), -1.0, 1.0)

  def discriminate(self, x: Array, condition: Array) -> Tuple[Array, Optional[Array]]:
    """D's patch logits (B, h, w) of images x, and its class logits (B, classes) or None."""
    return self.D(x, condition)

  def adversary(self, z: Array) -> Array:
    """A's expression logits of codes z."""
    return self.A(z)

  def transfer(self, x_source: Array, x_target_expression: Array) -> Array:
    """x_source's face with x_target_expression's expression (float images in [-1, 1])."""
    return self.transfer_to_condition(x_source, self.expression(x_target_expression)[0])

  def transfer_to_condition(self, x: Array, condition: Array) -> Array:
    """x's face with the expression of `condition` (B, classes), e.g. a one-hot; x's own
    expression is E2's p(l | x)."""
    return self.transfer_between(x, self.expression(x)[0], condition)

  def transfer_between(self, x: Array, source_condition: Array, condition: Array) -> Array:
    """x, whose expression is `source_condition`, moved to `condition`."""
    return self.redraw(x, self.identity(x)[0], condition, source_condition)

  def cycle_to_condition(self, transferred: Array, condition: Array,
                         transferred_condition: Array) -> Array:
    """G2 on E1(transferred), drawn with `condition` (the source's l'); `transferred_condition`
    is the condition the transferred image was drawn with."""
    return self.redraw(transferred, self.identity(transferred)[0], condition,
                       transferred_condition, second=True)


def create(model_config) -> DECGAN:
  """The DECGAN of a config's `model` fields (all but `name`)."""
  fields = {key: value for key, value in model_config.items() if key != "name"}
  for key, value in fields.items():
    if isinstance(value, list):
      fields[key] = tuple(value)
  fields["image_shape"] = tuple(fields["image_shape"])
  return DECGAN(**fields)


def association_losses(source: Array, target: Array, source_labels: Array
                       ) -> Tuple[Array, Array]:
  """Haeusser et al.'s walker and visit losses of embeddings `source` (A, labelled) and `target`
  (B).

  With M = A B^T, P^ab = softmax over rows of M and P^ba of M^T, the round trip
  P^aba = P^ab P^ba should land on examples of the source's own class, uniformly:
  walker = H(T, P^aba) with T_ij = [y_i = y_j] / #{k: y_k = y_i}; and every target example
  should be visited: visit = H(uniform, mean_i P^ab_i).
  """
  similarity = source @ target.T
  ab = jax.nn.softmax(similarity, axis=1)
  ba = jax.nn.softmax(similarity.T, axis=1)
  aba = ab @ ba
  same = (source_labels[:, None] == source_labels[None, :]).astype(jnp.float32)
  walk_target = same / same.sum(axis=1, keepdims=True)
  walker = -jnp.mean(jnp.sum(walk_target * jnp.log(aba + _EPSILON), axis=1))
  visits = ab.mean(axis=0)
  visit = -jnp.mean(jnp.log(visits + _EPSILON))
  return walker, visit


@flax.struct.dataclass
class HistoryBuffer:
  """Generated images kept per target class, with the conditions they were drawn with, for D
  (the paper's image library, after CycleGAN's pool). `counts[c]` slots of class c are filled."""
  images: Array  # (classes, size, H, W, C) in [-1, 1]
  conditions: Array  # (classes, size, classes)
  counts: Array  # (classes,) int32

  @classmethod
  def empty(cls, num_classes: int, size: int, image_shape: Sequence[int]) -> "HistoryBuffer":
    return cls(images=jnp.zeros((num_classes, size, *image_shape), jnp.float32),
               conditions=jnp.zeros((num_classes, size, num_classes), jnp.float32),
               counts=jnp.zeros((num_classes,), jnp.int32))


def query_history(buffer: HistoryBuffer, images: Array, conditions: Array, classes: Array,
                  rng: Array) -> Tuple[HistoryBuffer, Array, Array]:
  """The images (and conditions) D sees for newly generated `images` of target `classes`.

  While a class is not full, each new image of it takes the class's next free slot (in batch
  order) and is shown itself; one that finds no slot left in this batch is shown and not kept.
  Once a class was full before the batch, each new image, with probability 1/2, replaces a
  random slot and the image that was there is shown instead, else it is shown itself; two
  images drawn to the same slot both show its old image and the later one stays. The coin and
  slot of row i come from `fold_in(rng, i)`, so the result is a function of the key.

  Every row is handled at once from the buffer as it was before the batch: a pass over the rows
  one by one ran on every chip over the whole global batch, a loop as long as that batch whose
  memory per chip grew with the number of chips.
  """
  num_classes, size = buffer.images.shape[:2]
  rows = jnp.arange(images.shape[0])
  keys = jax.vmap(lambda row: jax.random.split(jax.random.fold_in(rng, row)))(rows)
  coins = jax.vmap(jax.random.uniform)(keys[:, 0])
  random_slots = jax.vmap(lambda key: jax.random.randint(key, (), 0, size))(keys[:, 1])
  members = jax.nn.one_hot(classes, num_classes, dtype=jnp.int32)
  earlier = jnp.take_along_axis(jnp.cumsum(members, axis=0) - members, classes[:, None],
                                axis=1)[:, 0]
  position = buffer.counts[classes] + earlier
  was_full = buffer.counts[classes] >= size
  swap = was_full & (coins < 0.5)
  slot = jnp.where(was_full, random_slots, jnp.minimum(position, size - 1))
  write = (position < size) | swap
  shown_images = jnp.where(swap.reshape(-1, *[1] * (images.ndim - 1)),
                           buffer.images[classes, slot], images)
  shown_conditions = jnp.where(swap[:, None], buffer.conditions[classes, slot], conditions)
  # Each slot keeps the last row written to it, put in place by a product over the rows (each
  # slot's sum has one term), which keeps every chip to its own rows.
  cells = classes * size + slot
  last = jnp.full((num_classes * size,), -1).at[cells].max(jnp.where(write, rows, -1))
  placement = jax.nn.one_hot(jnp.where(write & (last[cells] == rows), cells, -1),
                             num_classes * size, dtype=images.dtype)  # (rows, cells)
  kept = placement.sum(axis=0) > 0

  def place(stored: Array, new: Array) -> Array:
    flat = stored.reshape(num_classes * size, *stored.shape[2:])
    placed = jnp.tensordot(placement, new, axes=(0, 0))
    return jnp.where(kept.reshape(-1, *[1] * (flat.ndim - 1)), placed, flat).reshape(stored.shape)

  buffer = buffer.replace(images=place(buffer.images, images),
                          conditions=place(buffer.conditions, conditions),
                          counts=jnp.minimum(buffer.counts + members.sum(axis=0), size))
  return buffer, shown_images, shown_conditions


# How far down the batch a row looks for its partner (`partner_offsets`).
PARTNER_CANDIDATES = 15


def partner_offsets(labels: Array, rng: Array) -> Array:
  """For each row i, an offset k in 1..PARTNER_CANDIDATES (fewer in a smaller batch) such that
  row (i + k) mod batch, its partner, has another label, drawn at random among those that do
  (among all of them when none does). In a batch of 16 every other row is a candidate.

  The partners are the next rows rather than any row of the batch so that the draw needs
  memory in proportion to the batch (a draw over the whole batch scores batch^2 pairs) and, on
  a mesh, a chip needs only the first rows of the next chip's share (`take_partners`), where
  taking a partner by its row number had every chip collect the whole batch first. The rows
  arrive shuffled, so the pairs are still random.
  """
  offsets = _candidate_offsets(labels.shape[0])
  if not offsets:  # A batch of one row is its own partner.
    return jnp.zeros_like(labels)
  others = jnp.stack([jnp.roll(labels, -offset) for offset in offsets])  # (offsets, batch)
  scores = jax.random.uniform(rng, others.shape) + 2.0 * (others == labels)
  return 1 + jnp.argmin(scores, axis=0).astype(labels.dtype)


def take_partners(x: Array, offsets: Array) -> Array:
  """Row (i + offsets[i]) mod batch of `x` for every row i (`partner_offsets`)."""
  taken = x  # Offset 0: a batch of one row.
  for offset in _candidate_offsets(x.shape[0]):
    chosen = (offsets == offset).reshape(-1, *[1] * (x.ndim - 1))
    taken = jnp.where(chosen, jnp.roll(x, -offset, axis=0), taken)
  return taken


def _candidate_offsets(batch: int) -> range:
  return range(1, min(PARTNER_CANDIDATES, batch - 1) + 1)


@flax.struct.dataclass
class LossWeights:
  """The weight of each loss term (`train_step`); `expression_adversary` weighs E1's side of
  the adversary (A itself always learns at weight 1), `discriminator_class` D's class head on
  real images."""
  cycle: float = 10.0
  classification: float = 1.0
  association: float = 1.0
  target_class: float = 0.0
  reconstruction: float = 0.0
  expression_adversary: float = 0.0
  discriminator_class: float = 1.0
  change: float = 0.0
  paired: float = 0.0


def init_state(model: DECGAN, optimizers: Dict[str, optax.GradientTransformation], images: Array,
               rng: Array, history_size: int) -> adversarial.AdversarialState:
  """A fresh state of `model`'s networks; `extra` is the empty history buffer (None when
  `history_size` is 0)."""
  x = pixels.from_uint8(images)
  params = model.init({"params": rng}, x, x)["params"]
  extra = (HistoryBuffer.empty(model.num_classes, history_size, model.image_shape)
           if history_size else None)
  return adversarial.init_state(dict(params), optimizers, extra=extra)


def training_conditions(source_probabilities: Array, target_probabilities: Array,
                        labels: Array, target_labels: Array, one_hot_fraction: float,
                        rng: Array) -> Tuple[Array, Array]:
  """(source condition, target condition) of a batch: E2's p(l) of the source and target images
  (the paper), or, for a random `one_hot_fraction` of the rows, the one-hots of their true
  labels, which is what a user asks for at test time."""
  num_classes = source_probabilities.shape[-1]
  true = (jax.random.uniform(rng, labels.shape) < one_hot_fraction)[:, None]
  return (jnp.where(true, jax.nn.one_hot(labels, num_classes), source_probabilities),
          jnp.where(true, jax.nn.one_hot(target_labels, num_classes), target_probabilities))


def confusion_loss(logits: Array) -> Array:
  """The cross-entropy of `logits`' softmax against the uniform distribution: least when a
  reader is left with no preference."""
  return -jnp.mean(jax.nn.log_softmax(logits))


def train_step(state: adversarial.AdversarialState, batch: Dict[str, Array], rng: Array, *,
               model: DECGAN, optimizers: Dict[str, optax.GradientTransformation],
               weights: LossWeights, adversarial_loss: str = "non_saturating",
               one_hot_fraction: float = 0.0,
               paired_batch: Optional[Callable[[Array], Dict[str, Array]]] = None
               ) -> Tuple[adversarial.AdversarialState, Dict[str, Array]]:
  """One DECGAN step on {"image", "label"}: D's update, then the others' together.

  Each source image x is paired with a target-expression image y, a partner from the batch with
  another label (`partner_offsets`); the fake is x moved from its condition to y's
  (`training_conditions`). With `weights.paired`, `paired_batch(step)` gives the oracle's
  supervised pairs: uint8 "image" (B, H, W, C) with its "label", a "target_label" and the
  "truth", the same face rendered with the target; the term is the L1 of the image moved from
  its one-hot to its target's against the truth.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  pair_rng, history_rng, condition_rng = jax.random.split(step_rng, 3)
  x = pixels.from_uint8(batch["image"])
  labels = batch["label"].astype(jnp.int32)
  offsets = partner_offsets(labels, pair_rng)
  y, target_labels = take_partners(x, offsets), take_partners(labels, offsets)
  apply = lambda params, *args, method: model.apply({"params": params}, *args, method=method)

  source_condition, target_condition = jax.lax.stop_gradient(training_conditions(
      apply(state.params, x, method="expression")[0],
      apply(state.params, y, method="expression")[0], labels, target_labels, one_hot_fraction,
      condition_rng))
  fake = jax.lax.stop_gradient(apply(state.params, x, source_condition, target_condition,
                                     method="transfer_between"))
  pairs = paired_batch(state.step) if weights.paired else None
  extra, shown, shown_condition = state.extra, fake, target_condition
  if state.extra is not None:
    extra, shown, shown_condition = query_history(state.extra, fake, target_condition,
                                                  target_labels, history_rng)

  def discriminator_loss(trained):
    params = {**state.params, **trained}
    real_logits, real_classes = apply(params, y, target_condition, method="discriminate")
    fake_logits, _ = apply(params, shown, shown_condition, method="discriminate")
    loss = adversarial.discriminator_loss(real_logits, fake_logits, adversarial_loss)
    metrics = {"loss/discriminator": loss}
    if real_classes is not None:
      judged = optax.softmax_cross_entropy_with_integer_labels(real_classes,
                                                               target_labels).mean()
      loss = loss + weights.discriminator_class * judged
      metrics["loss/discriminator_class"] = judged
    return loss, metrics

  state, d_loss, d_metrics = adversarial.update_networks(state, [DISCRIMINATOR],
                                                         discriminator_loss, optimizers)

  def generator_loss(trained):
    params = {**state.params, **trained}
    z, source_embedding = apply(params, x, method="identity")
    _, source_logits, _ = apply(params, x, method="expression")
    _, target_logits, target_embedding = apply(params, y, method="expression")
    transferred = apply(params, x, z, target_condition, source_condition, method="redraw")
    patch_logits, class_logits = apply(params, transferred, target_condition,
                                       method="discriminate")
    adversarial_term = adversarial.generator_loss(patch_logits, adversarial_loss)
    reconstructed = apply(params, transferred, source_condition, target_condition,
                          method="cycle_to_condition")
    cycle = jnp.mean(jnp.abs(reconstructed - x))
    reconstruction = jnp.mean(jnp.abs(apply(params, z, source_condition, x, method="generate")
                                      - x))
    change = jnp.mean(jnp.abs(transferred - x))
    classification = 0.5 * (
        optax.softmax_cross_entropy_with_integer_labels(source_logits, labels).mean()
        + optax.softmax_cross_entropy_with_integer_labels(target_logits, target_labels).mean())
    walker, visit = association_losses(source_embedding, target_embedding, labels)
    if class_logits is None:
      # E2 judges whether the fake shows its target, without learning from fakes.
      class_logits = apply({**params, "E2": jax.lax.stop_gradient(params["E2"])}, transferred,
                           method="expression")[1]
    target_class = optax.softmax_cross_entropy_with_integer_labels(class_logits,
                                                                   target_labels).mean()
    loss = (adversarial_term + weights.cycle * cycle + weights.classification * classification
            + weights.association * (walker + visit) + weights.target_class * target_class
            + weights.reconstruction * reconstruction + weights.change * change)
    metrics = {"loss/adversarial": adversarial_term, "loss/cycle": cycle,
               "loss/reconstruction": reconstruction, "loss/change": change,
               "loss/classification": classification,
               "loss/walker": walker, "loss/visit": visit, "loss/target_class": target_class,
               "accuracy": jnp.mean(jnp.argmax(source_logits, axis=-1) == labels)}
    if model.expression_adversary_width:
      # A learns to read the expression from z; E1 learns to leave A's reading uniform.
      read = apply(params, jax.lax.stop_gradient(z), method="adversary")
      adversary = optax.softmax_cross_entropy_with_integer_labels(read, labels).mean()
      confusion = confusion_loss(apply({**params, "A": jax.lax.stop_gradient(params["A"])}, z,
                                       method="adversary"))
      loss = loss + adversary + weights.expression_adversary * confusion
      metrics.update({"loss/expression_adversary": adversary, "loss/confusion": confusion,
                      "adversary_accuracy": jnp.mean(jnp.argmax(read, axis=-1) == labels)})
    if weights.paired:
      one_hot = functools.partial(jax.nn.one_hot, num_classes=model.num_classes)
      moved = apply(params, pixels.from_uint8(pairs["image"]), one_hot(pairs["label"]),
                    one_hot(pairs["target_label"]), method="transfer_between")
      paired = jnp.mean(jnp.abs(moved - pixels.from_uint8(pairs["truth"])))
      loss = loss + weights.paired * paired
      metrics["loss/paired"] = paired
    return loss, {"loss/generator": loss, **metrics}

  trained = [name for name in model.networks if name != DISCRIMINATOR]
  state, g_loss, g_metrics = adversarial.update_networks(state, trained, generator_loss,
                                                         optimizers)
  state = state.replace(step=state.step + 1, extra=extra)
  return state, adversarial.step_metrics(state, {"loss": d_loss + g_loss, **d_metrics,
                                                 **g_metrics})


def transfer(model: DECGAN, variables: Any, x_source: Array, x_target_expression: Array
             ) -> Array:
  """uint8 images: each uint8 source face with the expression of its uint8 target image."""
  return pixels.to_uint8(model.apply(variables, pixels.from_uint8(x_source),
                                     pixels.from_uint8(x_target_expression), method="transfer"))


def transfer_to_class(model: DECGAN, variables: Any, x: Array, classes: Array,
                      class_conditions: Optional[Array] = None) -> Array:
  """uint8 images: each uint8 face with the expression of its class in `classes`.

  The condition of class c is `class_conditions[c]`, e.g. E2's mean p(l) over the training
  images of c (`flaxflow.analysis.decgan_inference.class_mean_conditions`); by default the
  one-hot of c.
  """
  conditions = class_conditions_of(classes, model.num_classes, class_conditions)
  return pixels.to_uint8(model.apply(variables, pixels.from_uint8(x), conditions,
                                     method="transfer_to_condition"))


def class_conditions_of(classes: Array, num_classes: int,
                        class_conditions: Optional[Array] = None) -> Array:
  """(B, classes): the condition of each class, `class_conditions[c]` or else c's one-hot.
  Class indices given as values (not traced) are checked: out of range, a one-hot would be all
  zeros, a condition G never saw."""
  if not isinstance(classes, jax.core.Tracer):
    out_of_range = [int(c) for c in np.ravel(classes) if not 0 <= int(c) < num_classes]
    if out_of_range:
      raise ValueError(f"class index {out_of_range[0]}: expected an index in [0, {num_classes})")
  return (jax.nn.one_hot(classes, num_classes) if class_conditions is None
          else jnp.asarray(class_conditions)[classes])


def cycle_reconstruction(model: DECGAN, variables: Any, x: Array, conditions: Array) -> Array:
  """uint8 G2(E1(G1(E1(x), condition)), p(l | x)): each face moved to its condition and back."""
  source = pixels.from_uint8(x)
  source_condition = model.apply(variables, source, method="expression")[0]
  moved = model.apply(variables, source, source_condition, conditions,
                      method="transfer_between")
  return pixels.to_uint8(model.apply(variables, moved, source_condition, conditions,
                                     method="cycle_to_condition"))


def expression_probabilities(model: DECGAN, variables: Any, x: Array) -> Array:
  """E2's p(l) of uint8 images."""
  return model.apply(variables, pixels.from_uint8(x), method="expression")[0]


def identity_codes(model: DECGAN, variables: Any, x: Array) -> Array:
  """E1's z of uint8 images, flattened to (B, features): what a probe of z reads."""
  z = model.apply(variables, pixels.from_uint8(x), method="identity")[0]
  return z.reshape(z.shape[0], -1)
