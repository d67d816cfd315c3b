# Every nerfstudio command imports this package (method entry points, a run's config.yml) before it loads a
# checkpoint: let torch's weights-only loader read the numpy scalars of checkpoints written before the fix
# (see tttlrm_ns.ns.checkpoint_io).
from tttlrm_ns.ns.checkpoint_io import allow_numpy_scalars as _allow_numpy_scalars

_allow_numpy_scalars()
