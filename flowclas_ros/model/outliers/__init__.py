"""The outlier-exposure wing, model layer: the networks that generate anomalies.

- ``flow_negative_sampler``: negatives drawn in feature space from the FlowCLAS flow itself
  (the ``flow_negatives`` source, NFlowJS style; kept for ablations);
- ``patch_generator_flow``: the multi-scale flow over RGB patches that generates the
  ``flow_patches`` bank.
"""
