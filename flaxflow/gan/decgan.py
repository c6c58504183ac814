"""DECGAN, the double-encoder conditional GAN of expression synthesis: networks, losses, the
per-class history buffer and one train step.

E1 encodes a face's identity into a feature map z; E2 reads an expression image into class
probabilities p(l) over the expressions, tiled over space as the condition; G1(z, l) draws the
face of z with the expression of l, and G2(E1(G1(...)), l') maps it back with the source's
label feature l' for the cycle loss. D judges patches of an image with its tiled condition.
The layers follow the paper's Tables 1 and 2 (widths and kernels configurable, so that small
images can use smaller ones); encoders and generators use instance norm, as the paper says.

Losses of one step (`train_step`): D's adversarial loss on real target images against generated
ones drawn through the history buffer; then E1, E2 and G on G's adversarial loss, the cycle L1
(weight 10), E2's cross-entropy on the real images, and the association of Haeusser et al.
(walker + visit) between E1's and E2's embeddings. G's losses see the condition p(l) as a
constant: E2 learns from its classification and the association only, so that p(l) stays a
reading of the expression. Two terms the paper does not have, 0 by default: `target_class`,
StarGAN's classification of the generated image as its target (by E2, not trained by it), and
`reconstruction`, the L1 of G1(E1(x), p(l | x)) against x, the auto-encoder the paper's
section 3.2 mentions, which teaches G to draw faces long before the adversarial game does.

Images are float in [-1, 1] inside the networks; the synthesis functions take and give uint8.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flaxflow import conv
from flaxflow.gan import adversarial

Array = jax.Array
DISCRIMINATOR = "D"
_EPSILON = 1e-8


def to_unit_range(images: Array) -> Array:
  """uint8 images as float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images: Array) -> Array:
  """Images in [-1, 1] as uint8, rounded."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


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


class Generator(nn.Module):
  """Table 1's decoder on concat(z, tiled l): k/2 transposed convolutions up to the image size,
  a k/1 one, each instance-normed with ReLU, then a k/1 one to `channels` with tanh.

  Instance norm subtracts each channel's spatial mean, and what a condition tiled over space
  adds through a convolution is (away from the borders) just such a mean: the norm all but
  erases it. With `condition_shifts`, every normed layer adds a learned per-channel shift of l
  before its ReLU (the bias of a conditional instance norm), which the norm cannot remove.
  """
  channels: int
  widths: Sequence[int] = (256, 128, 64)
  kernels: Sequence[int] = (3, 3, 7)
  output_kernel: int = 7
  condition_shifts: bool = True

  @nn.compact
  def __call__(self, z: Array, condition: Array) -> Array:
    x = jnp.concatenate([z, tile(condition, z.shape[1], z.shape[2])], axis=-1)
    for index, (width, kernel) in enumerate(zip(self.widths, self.kernels)):
      strides = (1, 1) if index == len(self.widths) - 1 else (2, 2)
      x = conv.ConvTranspose(width, (kernel, kernel), strides=strides, padding="SAME",
                             use_bias=False)(x)
      x = nn.InstanceNorm()(x)
      if self.condition_shifts:
        x = x + nn.Dense(width)(condition)[:, None, None, :]
      x = nn.relu(x)
    x = conv.Conv(self.channels, (self.output_kernel, self.output_kernel), padding="SAME")(x)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """Table 2's patch discriminator: conv k/1, the tiled condition joined to its output, then
  k/2, k/2, k/1 convolutions (LeakyReLU 0.01) and a k/1 one to one logit per patch (the
  paper's sigmoid is in the loss)."""
  widths: Sequence[int] = (64, 128, 256, 512)
  kernel: int = 7

  @nn.compact
  def __call__(self, x: Array, condition: Array) -> Array:
    size = (self.kernel, self.kernel)
    x = nn.leaky_relu(conv.Conv(self.widths[0], size, padding="SAME")(x), 0.01)
    x = jnp.concatenate([x, tile(condition, x.shape[1], x.shape[2])], axis=-1)
    for index, width in enumerate(self.widths[1:]):
      strides = 2 if index < 2 else 1
      x = nn.leaky_relu(conv.Conv(width, size, strides=strides, padding="SAME")(x), 0.01)
    return conv.Conv(1, size, padding="SAME")(x)[..., 0]


class DECGAN(nn.Module):
  """The five networks; `params` has one entry per network ("E1", "E2", "G1", ["G2"], "D"),
  which is how the train state updates them separately."""
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

  def setup(self):
    encoder = dict(widths=self.encoder_widths, kernels=self.encoder_kernels,
                   embedding_features=self.encoder_embedding_features)
    self.E1 = Encoder(**encoder)
    self.E2 = Encoder(**encoder, num_classes=self.num_classes)
    generator = dict(channels=self.image_shape[-1], widths=self.generator_widths,
                     kernels=self.generator_kernels, output_kernel=self.generator_output_kernel,
                     condition_shifts=self.condition_shifts)
    self.G1 = Generator(**generator)
    if not self.share_generators:
      self.G2 = Generator(**generator)
    self.D = Discriminator(widths=self.discriminator_widths, kernel=self.discriminator_kernel)

  @property
  def is_class_conditional(self) -> bool:
    """What `flaxflow.models.capabilities.check_model_matches_data` asks: D and G take labels."""
    return True

  def conditioning_labels(self, labels: Array) -> Array:
    """The labels as the shared evaluation passes them to a class-conditional model."""
    return labels

  @property
  def networks(self) -> Tuple[str, ...]:
    """The names of the networks, as in `params`."""
    return ("E1", "E2", "G1", *(() if self.share_generators else ("G2",)), DISCRIMINATOR)

  def __call__(self, x: Array, y: Array):
    """Every network once (for `init`): the transfer of x to y's expression, its cycle, and D."""
    fake = self.transfer(x, y)
    return fake, self.cycle(fake, x), self.discriminate(fake, self.expression(y)[0])

  def identity(self, x: Array) -> Tuple[Array, Array]:
    """E1: (z, embedding) of images x in [-1, 1]."""
    z, embedding, _ = self.E1(x)
    return z, embedding

  def expression(self, x: Array) -> Tuple[Array, Array, Array]:
    """E2: (p(l), logits, embedding) of images x in [-1, 1]."""
    _, embedding, logits = self.E2(x)
    return jax.nn.softmax(logits), logits, embedding

  def generate(self, z: Array, condition: Array, second: bool = False) -> Array:
    """G1(z, l), or G2 when `second` (G1 itself when the generators are shared)."""
    generator = self.G1 if self.share_generators or not second else self.G2
    return generator(z, condition)

  def discriminate(self, x: Array, condition: Array) -> Array:
    """D's patch logits (B, h, w) of images x with tiled `condition`."""
    return self.D(x, condition)

  def transfer(self, x_source: Array, x_target_expression: Array) -> Array:
    """x_source's face with x_target_expression's expression (float images in [-1, 1])."""
    return self.generate(self.identity(x_source)[0], self.expression(x_target_expression)[0])

  def transfer_to_condition(self, x: Array, condition: Array) -> Array:
    """x's face with the expression of `condition` (B, classes), e.g. a one-hot."""
    return self.generate(self.identity(x)[0], condition)

  def cycle(self, transferred: Array, x_source: Array) -> Array:
    """G2(E1(transferred), l') with l' = p(l) of the source: the source drawn back."""
    return self.cycle_to_condition(transferred, self.expression(x_source)[0])

  def cycle_to_condition(self, transferred: Array, condition: Array) -> Array:
    """G2(E1(transferred), condition)."""
    return self.generate(self.identity(transferred)[0], condition, second=True)


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

  In batch order, each new image fills the next free slot of its class and is shown itself;
  once its class is full, with probability 1/2 it replaces a random slot and the image that
  was there is shown instead, else it is shown itself. The coin and slot of row i come from
  `fold_in(rng, i)`, so the result is a function of the key.
  """
  size = buffer.images.shape[1]

  def one(buffer, row):
    image, condition, label, index = row
    coin_rng, slot_rng = jax.random.split(jax.random.fold_in(rng, index))
    count = buffer.counts[label]
    full = count >= size
    swap = full & (jax.random.uniform(coin_rng) < 0.5)
    slot = jnp.where(full, jax.random.randint(slot_rng, (), 0, size),
                     jnp.minimum(count, size - 1))
    write = ~full | swap
    shown_image = jnp.where(swap, buffer.images[label, slot], image)
    shown_condition = jnp.where(swap, buffer.conditions[label, slot], condition)
    buffer = buffer.replace(
        images=buffer.images.at[label, slot].set(
            jnp.where(write, image, buffer.images[label, slot])),
        conditions=buffer.conditions.at[label, slot].set(
            jnp.where(write, condition, buffer.conditions[label, slot])),
        counts=buffer.counts.at[label].add(jnp.where(full, 0, 1)))
    return buffer, (shown_image, shown_condition)

  rows = (images, conditions, classes, jnp.arange(images.shape[0]))
  buffer, (shown_images, shown_conditions) = jax.lax.scan(one, buffer, rows)
  return buffer, shown_images, shown_conditions


def partners(labels: Array, rng: Array) -> Array:
  """For each row, a random row of the batch with another label (any row, itself included,
  when the batch holds one label only)."""
  batch = labels.shape[0]
  scores = jax.random.uniform(rng, (batch, batch))
  same = labels[:, None] == labels[None, :]
  return jnp.argmin(scores + 2.0 * same, axis=1)


@flax.struct.dataclass
class LossWeights:
  cycle: float = 10.0
  classification: float = 1.0
  association: float = 1.0
  target_class: float = 0.0
  reconstruction: float = 0.0


def init_state(model: DECGAN, optimizers: Dict[str, optax.GradientTransformation], images: Array,
               rng: Array, history_size: int) -> adversarial.AdversarialState:
  """A fresh state of `model`'s networks; `extra` is the empty history buffer (None when
  `history_size` is 0)."""
  x = to_unit_range(images)
  params = model.init({"params": rng}, x, x)["params"]
  extra = (HistoryBuffer.empty(model.num_classes, history_size, model.image_shape)
           if history_size else None)
  return adversarial.init_state(dict(params), optimizers, extra=extra)


def train_step(state: adversarial.AdversarialState, batch: Dict[str, Array], rng: Array, *,
               model: DECGAN, optimizers: Dict[str, optax.GradientTransformation],
               weights: LossWeights, adversarial_loss: str = "non_saturating"
               ) -> Tuple[adversarial.AdversarialState, Dict[str, Array]]:
  """One DECGAN step on {"image", "label"}: D's update, then E1, E2 and G's together.

  Each source image x is paired with a target-expression image y, a partner from the batch with
  another label (`partners`); the fake is G1(E1(x), p(l | y)).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  pair_rng, history_rng = jax.random.split(step_rng)
  x = to_unit_range(batch["image"])
  labels = batch["label"].astype(jnp.int32)
  partner = partners(labels, pair_rng)
  y, target_labels = x[partner], labels[partner]
  apply = lambda params, *args, method: model.apply({"params": params}, *args, method=method)

  target_condition = jax.lax.stop_gradient(apply(state.params, y, method="expression")[0])
  fake = jax.lax.stop_gradient(apply(state.params, x, y, method="transfer"))
  extra, shown, shown_condition = state.extra, fake, target_condition
  if state.extra is not None:
    extra, shown, shown_condition = query_history(state.extra, fake, target_condition,
                                                  target_labels, history_rng)

  def discriminator_loss(trained):
    params = {**state.params, **trained}
    real_logits = apply(params, y, target_condition, method="discriminate")
    fake_logits = apply(params, shown, shown_condition, method="discriminate")
    loss = adversarial.discriminator_loss(real_logits, fake_logits, adversarial_loss)
    return loss, {"loss/discriminator": loss}

  state, d_loss, d_metrics = adversarial.update_networks(state, [DISCRIMINATOR],
                                                         discriminator_loss, optimizers)

  def generator_loss(trained):
    params = {**state.params, **trained}
    z, source_embedding = apply(params, x, method="identity")
    source_condition, source_logits, _ = apply(params, x, method="expression")
    condition, target_logits, target_embedding = apply(params, y, method="expression")
    # E2 learns from its classification and the association only: G's losses reaching it
    # through the condition turn p(l) into a side channel for the cycle (E2 stays at chance).
    source_condition = jax.lax.stop_gradient(source_condition)
    condition = jax.lax.stop_gradient(condition)
    transferred = apply(params, z, condition, method="generate")
    adversarial_term = adversarial.generator_loss(
        apply(params, transferred, condition, method="discriminate"), adversarial_loss)
    reconstructed = apply(params, transferred, source_condition, method="cycle_to_condition")
    cycle = jnp.mean(jnp.abs(reconstructed - x))
    autoencoded = apply(params, z, source_condition, method="generate")
    reconstruction = jnp.mean(jnp.abs(autoencoded - x))
    classification = 0.5 * (
        optax.softmax_cross_entropy_with_integer_labels(source_logits, labels).mean()
        + optax.softmax_cross_entropy_with_integer_labels(target_logits, target_labels).mean())
    walker, visit = association_losses(source_embedding, target_embedding, labels)
    # E2 judges whether the fake shows its target, without learning from fakes.
    judged = apply({**params, "E2": jax.lax.stop_gradient(params["E2"])}, transferred,
                   method="expression")[1]
    target_class = optax.softmax_cross_entropy_with_integer_labels(judged, target_labels).mean()
    loss = (adversarial_term + weights.cycle * cycle + weights.classification * classification
            + weights.association * (walker + visit) + weights.target_class * target_class
            + weights.reconstruction * reconstruction)
    accuracy = jnp.mean(jnp.argmax(source_logits, axis=-1) == labels)
    return loss, {"loss/generator": loss, "loss/adversarial": adversarial_term,
                  "loss/cycle": cycle, "loss/reconstruction": reconstruction,
                  "loss/classification": classification,
                  "loss/walker": walker, "loss/visit": visit, "loss/target_class": target_class,
                  "accuracy": accuracy}

  trained = [name for name in model.networks if name != DISCRIMINATOR]
  state, g_loss, g_metrics = adversarial.update_networks(state, trained, generator_loss,
                                                         optimizers)
  state = state.replace(step=state.step + 1, extra=extra)
  return state, adversarial.step_metrics(state, {"loss": d_loss + g_loss, **d_metrics,
                                                 **g_metrics})


def transfer(model: DECGAN, variables: Any, x_source: Array, x_target_expression: Array
             ) -> Array:
  """uint8 images: each uint8 source face with the expression of its uint8 target image."""
  return to_uint8(model.apply(variables, to_unit_range(x_source),
                              to_unit_range(x_target_expression), method="transfer"))


def transfer_to_class(model: DECGAN, variables: Any, x: Array, classes: Array,
                      class_conditions: Optional[Array] = None) -> Array:
  """uint8 images: each uint8 face with the expression of its class in `classes`.

  The condition of class c is `class_conditions[c]`, e.g. E2's mean p(l) over the training
  images of c (`class_mean_conditions`); by default the one-hot of c.
  """
  return to_uint8(model.apply(variables, to_unit_range(x),
                              class_conditions_of(classes, model.num_classes, class_conditions),
                              method="transfer_to_condition"))


def class_conditions_of(classes: Array, num_classes: int,
                        class_conditions: Optional[Array] = None) -> Array:
  """(B, classes): the condition of each class, `class_conditions[c]` or else c's one-hot."""
  return (jax.nn.one_hot(classes, num_classes) if class_conditions is None
          else jnp.asarray(class_conditions)[classes])


def cycle_reconstruction(model: DECGAN, variables: Any, x: Array, conditions: Array) -> Array:
  """uint8 G2(E1(G1(E1(x), condition)), p(l | x)): each face moved to its condition and back."""
  source = to_unit_range(x)
  moved = model.apply(variables, source, conditions, method="transfer_to_condition")
  return to_uint8(model.apply(variables, moved, source, method="cycle"))


def expression_probabilities(model: DECGAN, variables: Any, x: Array) -> Array:
  """E2's p(l) of uint8 images."""
  return model.apply(variables, to_unit_range(x), method="expression")[0]
