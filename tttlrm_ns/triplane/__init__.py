"""The triplane object model, every part of it: tttLRM's backbone predicting three feature planes (the seed's B.2).

Modules, in dependency order (``docs/architecture.md`` gives each its layer):

* ``model``: the network (:class:`~tttlrm_ns.triplane.model.TriplaneModel`), the field that decodes the planes, its
  presets, and the ``.safetensors`` file it is saved to and loaded from (``model_kind=triplane``); pure torch.
* ``volume``: volume rendering of rays through the object box (pure torch).
* ``held_out``: feed-forward renders of held-out views without nerfstudio (``experiments/eval_triplane.py``).
* ``train``: the ``triplane`` model kind of ``tttlrm-train`` (:class:`~tttlrm_ns.triplane.train.TriplaneKind`:
  patch rendering loss, initial weights, export), registered in :mod:`tttlrm_ns.train.kinds`.
* ``ns``: the nerfstudio method ``tttlrm-triplane`` (model, pipeline, trainer).
* ``mesh_export``: ``tttlrm-export-triplane`` (marching-cubes mesh and point cloud of a ``tttlrm-triplane`` run).

Nothing is imported here: importing the package must not pull nerfstudio (``ns``) into the trainer.
"""
