"""A toy task small enough to understand at a glance: read numbers, write them sorted.

The "image" shows 1..K numbers (0..9), one per band of rows: a band's red channel is the
number / 9 and its green channel says the band is used. The target sequence is the numbers in
ascending order, then EOS::

    image bands: 7, 2, 9   ->   tokens: [2+2, 7+2, 9+2, EOS, PAD]   (value v is token v + 2)

Likelihood training scores every token against the target on its own (teacher forcing, the
true prefix always given); the reward scores what the model actually *writes*, as a whole:
the fraction of the L positions the decoded sequence gets right, so an early slip that shifts
the rest of the sequence costs every later position. MLE never sees its own mistakes; REINFORCE
does. Used by the core's tests and the teaching notebook.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PAD, EOS, OFFSET = 0, 1, 2


class SortTask:
    """Read up to ``max_numbers`` numbers in [0, ``num_values``) from an image; emit them
    sorted, then EOS."""

    name = "toy_sort"
    pad_id = PAD
    eos_id = EOS
    frozen = None

    def __init__(self, max_numbers: int = 4, num_values: int = 10, image_size: int = 32):
        if image_size % max_numbers:
            raise ValueError(f"image_size={image_size} must be a multiple of "
                             f"max_numbers={max_numbers} (one band of rows per number)")
        self.max_numbers = max_numbers
        self.num_values = num_values
        self.image_size = image_size
        self.vocab_size = OFFSET + num_values
        self.max_len = max_numbers + 1
        table = np.zeros((self.max_len, self.vocab_size), bool)  # [L,V]
        table[0, OFFSET:] = True  # at least one number
        table[1:max_numbers, OFFSET:] = True
        table[1:, EOS] = True
        table[max_numbers, OFFSET:] = False  # after K numbers: EOS
        self._table = table

    # --- data -------------------------------------------------------------------------------
    def example(self, rng: np.random.Generator) -> dict[str, Any]:
        """One example: ``image`` uint8 [H,W,3] and ``values`` int32 [count]."""
        count = int(rng.integers(1, self.max_numbers + 1))
        values = rng.integers(0, self.num_values, count).astype(np.int32)
        s, band = self.image_size, self.image_size // self.max_numbers
        image = np.zeros((s, s, 3), np.uint8)
        for i, v in enumerate(values):
            image[i * band:(i + 1) * band, :, 0] = round(255 * v / (self.num_values - 1))
            image[i * band:(i + 1) * band, :, 1] = 255
        return {"image": image, "values": values}

    def batch(self, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """A batch that is a pure function of (seed, step): ``image`` float32 [B,H,W,3] in
        [0,1], ``tokens`` int32 [B,L], ``values`` int32 [B,K] (-1 padded)."""
        rng = np.random.default_rng([seed, step])
        examples = [self.example(rng) for _ in range(batch_size)]
        values = np.full((batch_size, self.max_numbers), -1, np.int32)
        for i, ex in enumerate(examples):
            values[i, :len(ex["values"])] = ex["values"]
        return {"image": np.stack([ex["image"] for ex in examples]).astype(np.float32) / 255,
                "tokens": np.stack([self.tokenize(ex) for ex in examples]),
                "values": values}

    # --- the Task protocol --------------------------------------------------------------------
    def tokenize(self, example: dict[str, Any]) -> np.ndarray:
        out = np.full(self.max_len, PAD, np.int32)
        vals = np.sort(np.asarray(example["values"]))
        out[:len(vals)] = vals + OFFSET
        out[len(vals)] = EOS
        return out

    def allowed(self, position: jax.Array, prev_token: jax.Array) -> jax.Array:
        """Position rule only: a number first, EOS from position 1, EOS after K numbers."""
        return jnp.asarray(self._table)[position]

    def detokenize(self, tokens: np.ndarray) -> list[int]:
        """The numbers before the first EOS (PAD and stray tokens skipped)."""
        out = []
        for t in np.asarray(tokens).tolist():
            if t == EOS:
                break
            if t >= OFFSET:
                out.append(t - OFFSET)
        return out

    def reward(self, samples: np.ndarray, batch: dict[str, Any], frozen: Any = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Fraction of positions equal to the sorted target: float32 [B,N] in [0,1]."""
        samples = np.asarray(samples)
        target = np.asarray(batch["tokens"])[:, None, :]  # [B,1,L]
        correct = samples == target
        exact = correct.all(-1)
        return correct.mean(-1).astype(np.float32), {"exact_match": np.float32(exact.mean())}

    def evaluate(self, predictions: list[list[int]], examples: list[dict]) -> dict[str, float]:
        """Exact-match rate and mean absolute count error of decoded predictions."""
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        exact = [p == sorted(ex["values"].tolist()) for p, ex in zip(predictions, examples,
                                                                     strict=True)]
        count_err = [abs(len(p) - len(ex["values"])) for p, ex in zip(predictions, examples,
                                                                       strict=True)]
        return {"exact_match": float(np.mean(exact)), "count_error": float(np.mean(count_err))}

    def draw(self, example: dict[str, Any], prediction: list[int] | None = None, ax=None):
        import matplotlib.pyplot as plt
        ax = ax or plt.gca()
        ax.imshow(example["image"])
        title = f"target {sorted(example['values'].tolist())}"
        if prediction is not None:
            title += f"\npred {prediction}"
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        return ax
