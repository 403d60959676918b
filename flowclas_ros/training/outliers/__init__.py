"""The outlier-exposure wing, training layer: the generated sources wired into training.

- ``flow_patch_bank``: trains the patch generator on the frames and samples the cached
  ``flow_patches`` bank;
- ``flow_negative_batches``: turns the config into the ``flow_negatives`` sampler and appends its
  negatives to a training batch.
"""
