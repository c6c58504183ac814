"""2x2 space-to-depth (Glow's squeeze): a permutation of pixels, so its log-det is zero."""

import einops

from flaxflow.bijectors.base import Bijector, zero_log_det


class Squeeze(Bijector):
  """(B, H, W, C) -> (B, H/f, W/f, C*f*f), pixels of each f x f block stacked channel-last."""

  factor: int = 2

  def forward_and_log_det(self, x, cond=None):
    _, height, width, _ = x.shape
    if height % self.factor or width % self.factor:
      raise ValueError(f"Squeeze(factor={self.factor}) needs height and width divisible by "
                       f"{self.factor}, got an input of shape {x.shape}")
    y = einops.rearrange(x, "b (h fh) (w fw) c -> b h w (c fh fw)", fh=self.factor, fw=self.factor)
    return y, zero_log_det(x)

  def inverse_and_log_det(self, y, cond=None):
    if y.shape[-1] % (self.factor * self.factor):
      raise ValueError(f"Squeeze(factor={self.factor}).inverse needs channels divisible by "
                       f"{self.factor ** 2}, got an input of shape {y.shape}")
    x = einops.rearrange(y, "b h w (c fh fw) -> b (h fh) (w fw) c", fh=self.factor, fw=self.factor)
    return x, zero_log_det(y)
