"""The outlier-exposure wing, data layer: what pastes synthetic anomalies into inlier frames.

One module per source, named for what it makes (all numpy + OpenCV, no torch):

- ``cutouts``: cut-out banks (RGBA PNGs) and the paste every source shares (the ``cutouts`` source);
- ``coco_cutouts``: a cut-out bank cut from COCO instance annotations (``flowclas-ros coco-bank``);
- ``procedural_anomalies``: noise-shaped blobs with foreign fills (the ``procedural`` source);
- ``flow_patch_pasting``: pastes a bank of flow-generated patches (the ``flow_patches`` source).

The generators that need torch live one floor up, in ``model/outliers`` (the networks) and
``training/outliers`` (training them and feeding the training loop).
"""
