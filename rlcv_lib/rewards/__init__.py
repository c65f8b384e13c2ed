"""Task rewards, vectorised over a batch of B images × N samples.

* :mod:`~rlcv_lib.rewards.detection`: the detection reward of the paper (class-weighted matches
  over IoU thresholds, duplicate penalty, confidence targets), correct by default and with the
  released behaviour behind ``paper_compat``;
* :mod:`~rlcv_lib.rewards.detection_released`: a slow, literal NumPy replay of the released
  big_vision reward, the reference of the tests and the benchmark (never used in training);
* :mod:`~rlcv_lib.rewards.cider`: CIDEr-D for captioning.

Rewards work on decoded arrays (boxes, labels); the task modules own the tokens.
"""
