"""Draws synthetic faces from their factors, in numpy.

Each part of the face is an implicit shape: a function of the pixel position that is
negative inside, about the distance to its edge. Parts are painted back to front on a grid
`SUPERSAMPLE` times finer than the image, each with a coverage that ramps over one fine
pixel, then the grid is averaged down (anti-aliasing), lit by a gradient and given sensor
noise. Every pixel goes through the same elementwise float32 operations whatever the batch,
so one face rendered alone equals the same face rendered in a batch, bit for bit.

    from flaxflow.data.synthetic_faces import NEUTRAL_NUISANCE, mean_identity, render
    image = render(mean_identity(), expression=3, intensity=1.0,
                   nuisance=NEUTRAL_NUISANCE, size=48)  # uint8 (48, 48, 1): a smile
"""

from __future__ import annotations

import math
import types

import numpy as np

from flaxflow.data.synthetic_faces.factors import (ACTION_FIELDS, CLASS_NAMES, IDENTITY_FIELDS,
                                          NUISANCE_FIELDS, expression_actions)

SUPERSAMPLE = 2
MIN_SIZE = 8
HEAD_CENTRE = 0.06  # vertical position of the head's centre in the face frame
LINE = 0.013  # half-thickness of drawn lines (outlines, wrinkles), in the face frame
_BATCH = 64  # images rendered together: large enough to amortise numpy's per-call cost


def render(identity, expression, intensity, nuisance, size: int) -> np.ndarray:
  """Draws faces from their factors (see `data.synthetic_faces.factors`).

  Args:
    identity: float (len(IDENTITY_FIELDS),) for one face or (N, len(IDENTITY_FIELDS)).
    expression: int class index into CLASS_NAMES, () or (N,).
    intensity: float in [0, 1], () or (N,); 0 renders the neutral face.
    nuisance: float (len(NUISANCE_FIELDS),) or (N, len(NUISANCE_FIELDS));
      `NEUTRAL_NUISANCE` gives the canonical, upright, evenly lit and noiseless face.
    size: the side of the square image in pixels, at least MIN_SIZE.

  Returns:
    uint8 (size, size, 1) for one face, (N, size, size, 1) for N. The same factors always
    give the same pixels.
  """
  identity, expression, intensity, nuisance, single = _checked(
      identity, expression, intensity, nuisance, size)
  images = np.empty((len(expression), size, size, 1), np.uint8)
  for start in range(0, len(images), _BATCH):
    part = slice(start, start + _BATCH)
    images[part, ..., 0] = _render_batch(identity[part], expression[part], intensity[part],
                                         nuisance[part], size)
  return images[0] if single else images


def _checked(identity, expression, intensity, nuisance, size):
  """The factors as batched arrays of the right dtypes, or a ValueError naming the argument."""
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
    raise ValueError(f"size must be an integer of at least {MIN_SIZE}, got {size!r}")
  identity = np.asarray(identity, np.float32)
  expression = np.asarray(expression)
  intensity = np.asarray(intensity, np.float32)
  nuisance = np.asarray(nuisance, np.float32)
  single = identity.ndim == 1
  expected = {"identity": (identity, (len(IDENTITY_FIELDS),)), "expression": (expression, ()),
              "intensity": (intensity, ()), "nuisance": (nuisance, (len(NUISANCE_FIELDS),))}
  batch = () if single else identity.shape[:1]
  for name, (value, per_face) in expected.items():
    if value.shape != batch + per_face:
      raise ValueError(f"{name} must have shape {batch + per_face} (to match identity "
                       f"{identity.shape}), got {value.shape}")
  if not np.issubdtype(expression.dtype, np.integer) or np.any(
      (expression < 0) | (expression >= len(CLASS_NAMES))):
    raise ValueError(f"expression must be integer class indices in [0, {len(CLASS_NAMES)}), "
                     f"got {expression!r}")
  if not np.all((intensity >= 0) & (intensity <= 1)):
    raise ValueError(f"intensity must lie in [0, 1], got {intensity!r}")
  if not (np.all(np.isfinite(identity)) and np.all(np.isfinite(nuisance))):
    raise ValueError("identity and nuisance must be finite")
  as_batch = (np.atleast_2d(identity), np.atleast_1d(expression), np.atleast_1d(intensity),
              np.atleast_2d(nuisance))
  return (*as_batch, single)


def _render_batch(identity, expression, intensity, nuisance, size) -> np.ndarray:
  person = _fields(identity, IDENTITY_FIELDS)
  action = _fields(expression_actions(expression, intensity), ACTION_FIELDS)
  conditions = _fields(nuisance, NUISANCE_FIELDS)
  frame = _face_frame(conditions, size * SUPERSAMPLE)
  canvas = np.broadcast_to(conditions.background, frame.u.shape).copy()
  for part in _PARTS:  # back to front
    for coverage, tone in part(frame, person, action):
      canvas += coverage * (tone - canvas)
  image = _downsample(canvas, SUPERSAMPLE)
  image = _lit(image, conditions)
  image = _with_noise(image, conditions)
  return np.floor(np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _fields(vectors: np.ndarray, names) -> types.SimpleNamespace:
  """Each column of (N, len(names)) `vectors` by name, shaped (N, 1, 1) to broadcast over
  pixels."""
  vectors = np.asarray(vectors, np.float32)
  return types.SimpleNamespace(**{name: vectors[:, i, np.newaxis, np.newaxis]
                                  for i, name in enumerate(names)})


def _pixel_centres(side: int) -> np.ndarray:
  """Centres of `side` pixels spanning [-1, 1], float32."""
  return (np.arange(side, dtype=np.float32) + np.float32(0.5)) * np.float32(2 / side) - 1


def _per_image(function, angles: np.ndarray) -> np.ndarray:
  # One scalar call per image: numpy's vectorised transcendentals may round differently
  # with the batch length, and a face must not depend on its batch.
  return np.array([function(angle) for angle in angles.ravel()],
                  np.float32).reshape(angles.shape)


def _face_frame(conditions, side: int) -> types.SimpleNamespace:
  """Face-frame coordinates u (right), v (down) of every fine pixel of every image, after
  the nuisance rotation, shift and scale; `fine_pixel` is one fine pixel in that frame."""
  centres = _pixel_centres(side)
  x = centres[np.newaxis, np.newaxis, :] - conditions.shift_x
  y = centres[np.newaxis, :, np.newaxis] - conditions.shift_y
  cos = _per_image(math.cos, conditions.rotation)
  sin = _per_image(math.sin, conditions.rotation)
  u = (cos * x + sin * y) / conditions.scale
  v = (cos * y - sin * x) / conditions.scale
  return types.SimpleNamespace(u=u, v=v, side_u=np.abs(u),
                               fine_pixel=np.float32(2 / side) / conditions.scale)


def _cover(distance: np.ndarray, frame) -> np.ndarray:
  """Coverage in [0, 1] of a shape with signed `distance`, ramping over one fine pixel."""
  return np.clip(np.float32(0.5) - distance / frame.fine_pixel, 0, 1)


def _ellipse(du, dv, half_width, half_height):
  """About the signed distance to an axis-aligned ellipse centred at du = dv = 0."""
  radius = np.sqrt((du / half_width) ** 2 + (dv / half_height) ** 2)
  return (radius - 1) * np.minimum(half_width, half_height)


def _segment(u, v, start, end, half_thickness):
  """Signed distance to a segment from `start` to `end` (each a (u, v) pair), thickened."""
  along_u, along_v = end[0] - start[0], end[1] - start[1]
  to_u, to_v = u - start[0], v - start[1]
  fraction = np.clip((to_u * along_u + to_v * along_v) / (along_u ** 2 + along_v ** 2), 0, 1)
  return np.sqrt((to_u - fraction * along_u) ** 2
                 + (to_v - fraction * along_v) ** 2) - half_thickness


def _head_distance(frame, person):
  below_centre = np.clip((frame.v - HEAD_CENTRE) / person.head_height, 0, 1)
  half_width = person.head_width * (1 - person.jaw_taper * below_centre ** 2)
  radius = np.sqrt((frame.u / half_width) ** 2
                   + ((frame.v - HEAD_CENTRE) / person.head_height) ** 2)
  return (radius - 1) * np.minimum(person.head_width, person.head_height)


def _ears(frame, person, action):
  half_width = 0.05 + 0.06 * person.ear_size
  centre = person.head_width + half_width * (0.6 * person.ear_size - 0.2)
  ear = _ellipse(frame.side_u - centre, frame.v - (person.eye_level + 0.09), half_width,
                 0.1 + 0.05 * person.ear_size)
  yield _cover(ear, frame), 0.85 * person.skin_tone
  yield _cover(np.abs(ear) - LINE, frame), 0.55 * person.skin_tone


def _back_hair(frame, person, action):
  """The hair outside the head: a cap for short hair, falling past the jaw for long."""
  above = person.head_height + 0.04 + 0.13 * person.hair_volume
  below = person.head_height + 0.35
  dv = frame.v - HEAD_CENTRE
  outline = _ellipse(frame.u, dv, person.head_width + 0.04 + 0.12 * person.hair_volume,
                     np.where(dv < 0, above, below))
  ends = HEAD_CENTRE - 0.15 + 0.95 * person.hair_length
  yield _cover(np.maximum(outline, frame.v - ends), frame), person.hair_tone


def _neck(frame, person, action):
  half_width = 0.5 * person.head_width * (1 - 0.5 * person.jaw_taper)
  neck = np.maximum(frame.side_u - half_width, HEAD_CENTRE + 0.5 * person.head_height - frame.v)
  yield _cover(neck, frame), 0.8 * person.skin_tone


def _head(frame, person, action):
  head = _head_distance(frame, person)
  yield _cover(head, frame), person.skin_tone
  yield _cover(np.abs(head) - LINE, frame), 0.55 * person.skin_tone


def _top_hair(frame, person, action):
  """The hair over the head down to the hairline, which dips at the sides and tilts with
  the parting."""
  parting = 0.35 * person.hair_part * person.head_width
  crown = HEAD_CENTRE - person.head_height
  hairline = (crown + person.head_height * (0.26 + 0.16 * person.hairline)
              + 1.2 * (frame.u - parting) ** 2 + 0.12 * person.hair_part * (frame.u - parting))
  hair = np.maximum(_head_distance(frame, person) - 0.03, frame.v - hairline)
  yield _cover(hair, frame), person.hair_tone


def _layout(person, action) -> types.SimpleNamespace:
  """Where the nose tip and mouth sit, and the mouth's half-width, for the current action."""
  nose_tip = person.eye_level + person.nose_length
  mouth = np.minimum(nose_tip + 0.14, HEAD_CENTRE + 0.62 * person.head_height)
  mouth_half_width = person.mouth_width * (1 + 0.35 * action.mouth_stretch)
  return types.SimpleNamespace(nose_tip=nose_tip, mouth=mouth,
                               mouth_half_width=mouth_half_width)


def _nose(frame, person, action):
  layout = _layout(person, action)
  shadow = _ellipse(frame.u, frame.v - (layout.nose_tip - 0.01), person.nose_width, 0.045)
  yield _cover(shadow, frame), 0.82 * person.skin_tone
  ridge = _segment(frame.u, frame.v, (0.3 * person.nose_width, person.eye_level + 0.08),
                   (0.45 * person.nose_width, layout.nose_tip - 0.05), 0.8 * LINE)
  yield _cover(ridge, frame), 0.7 * person.skin_tone
  nostrils = _ellipse(frame.side_u - 0.5 * person.nose_width, frame.v - layout.nose_tip,
                      0.028, 0.018)
  yield _cover(nostrils, frame), 0.35 * person.skin_tone


def _wrinkles(frame, person, action):
  """Nose wrinkles (disgust) and the folds from nose to mouth corners (smile, disgust)."""
  layout = _layout(person, action)
  bridge = np.minimum(np.abs(frame.v - (person.eye_level + 0.06)),
                      np.abs(frame.v - (person.eye_level + 0.11)))
  wrinkles = np.maximum(bridge - LINE, frame.side_u - 0.07)
  yield _cover(wrinkles, frame) * np.clip(action.nose_wrinkle, 0, 1), 0.45 * person.skin_tone
  folds = _segment(frame.side_u, frame.v, (person.nose_width + 0.03, layout.nose_tip - 0.03),
                   (layout.mouth_half_width + 0.04, layout.mouth - 0.01), 0.8 * LINE)
  depth = np.clip(0.8 * np.maximum(action.lip_corner, 0) + action.nose_wrinkle, 0, 1)
  yield _cover(folds, frame) * depth, 0.6 * person.skin_tone


def _mouth(frame, person, action):
  """Lips between an upper and a lower curve through the corners; the corners move up or
  down with the lip-corner action, the lips part with jaw drop and upper-lip raise."""
  layout = _layout(person, action)
  across = np.minimum((frame.u / layout.mouth_half_width) ** 2, 1)
  middle = layout.mouth + 0.12 * action.lip_corner * (0.4 - across)
  profile = np.sqrt(1 - across)  # elliptical: a round O when wide open
  upper = middle - (0.012 + 0.06 * action.mouth_open + 0.05 * action.upper_lip_raise) * profile
  lower = middle + (0.012 + 0.16 * action.mouth_open) * profile
  opening = np.maximum(np.maximum(upper - frame.v, frame.v - lower),
                       frame.side_u - layout.mouth_half_width) - LINE
  yield _cover(opening - 0.012, frame), 0.65 * person.skin_tone
  yield _cover(opening, frame), np.float32(0.12)
  teeth = np.maximum(opening, frame.v - (upper + 0.045))
  shown = np.clip(np.maximum(action.lip_corner, 0) + action.upper_lip_raise, 0, 1)
  yield _cover(teeth, frame) * shown, np.float32(0.92)


def _eyes(frame, person, action):
  """Eye whites between lids that open with eye_open and close from below with lid
  tension; the iris stays inside the lids."""
  du, dv = frame.side_u - person.eye_spacing, frame.v - person.eye_level
  upper = person.eye_size * np.maximum(0.5 + 0.38 * action.eye_open, 0.08)
  lower = person.eye_size * np.maximum(
      0.45 - 0.3 * action.lid_tension + 0.1 * np.maximum(action.eye_open, 0), 0.08)
  eye = _ellipse(du, dv, person.eye_size, np.where(dv < 0, upper, lower))
  inside = _cover(eye, frame)
  yield inside, np.float32(0.96)
  iris = np.sqrt(du ** 2 + dv ** 2) - 0.48 * person.eye_size
  yield np.minimum(_cover(iris, frame), inside), np.float32(0.12)
  yield _cover(np.abs(eye) - LINE, frame), np.float32(0.1)


def _brows(frame, person, action):
  """Brows above the eyes: raised or lowered, inner ends tilted up or down, arched more
  when raised."""
  half_length = 1.25 * person.eye_size
  outward = frame.side_u - person.eye_spacing
  height = person.eye_level - 0.95 * person.eye_size - 0.06 - 0.08 * action.brow_raise
  arch = 0.02 + 0.04 * np.maximum(action.brow_raise, 0)
  centre_line = (height + 0.6 * action.brow_inner * outward
                 + arch * (outward / half_length) ** 2)
  brow = np.maximum(np.abs(frame.v - centre_line) - person.brow_thickness,
                    np.abs(outward) - half_length)
  yield _cover(brow, frame), 0.5 * np.minimum(person.hair_tone, person.skin_tone)


def _glasses(frame, person, action):
  """Round frames around both eyes, a bridge between them and arms out to the ears."""
  radius = person.eye_size + 0.035
  du, dv = frame.side_u - person.eye_spacing, frame.v - person.eye_level
  rims = np.abs(np.sqrt(du ** 2 + dv ** 2) - radius) - 0.8 * LINE
  bridge = frame.side_u - (person.eye_spacing - radius)
  arms = np.maximum(person.eye_spacing + radius - frame.side_u,
                    frame.side_u - person.head_width)
  bars = np.maximum(np.abs(dv) - 0.8 * LINE, np.minimum(bridge, arms))
  yield _cover(np.minimum(rims, bars), frame) * person.glasses, np.float32(0.08)


# Brows go over the glasses so that a frown stays visible through them.
_PARTS = (_ears, _back_hair, _neck, _head, _top_hair, _nose, _wrinkles, _mouth, _eyes, _glasses,
          _brows)


def _downsample(canvas: np.ndarray, factor: int) -> np.ndarray:
  """Mean over factor x factor blocks, summed in one fixed order."""
  total = np.zeros_like(canvas[:, ::factor, ::factor])
  for row in range(factor):
    for column in range(factor):
      total += canvas[:, row::factor, column::factor]
  return total / np.float32(factor * factor)


def _lit(image: np.ndarray, conditions) -> np.ndarray:
  """`image` under a linear lighting gradient rising towards `light_angle`."""
  centres = _pixel_centres(image.shape[1])
  towards = (_per_image(math.cos, conditions.light_angle) * centres[np.newaxis, np.newaxis, :]
             + _per_image(math.sin, conditions.light_angle) * centres[np.newaxis, :, np.newaxis])
  return image * (1 + conditions.light_strength * towards)


def _with_noise(image: np.ndarray, conditions) -> np.ndarray:
  """`image` plus Gaussian noise drawn from each image's own noise seed."""
  noise = np.stack([np.random.default_rng(int(seed)).standard_normal(image.shape[1:],
                                                                     np.float32)
                    for seed in conditions.noise_seed.ravel()])
  return image + conditions.noise_std * noise
