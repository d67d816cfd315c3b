"""Synthetic multi-view training data (objects and furnished rooms) rendered with pyrender + OSMesa on CPU.

Entry points: ``tttlrm-synth`` (:mod:`tttlrm_ns.synth.cli`), ``tttlrm-synth stress-set``
(:mod:`tttlrm_ns.synth.stress_set`), :func:`tttlrm_ns.synth.generate.generate`. Importing this package does not
import OpenGL; :func:`tttlrm_ns.synth.gl.osmesa_status` says whether rendering is possible here.
"""

from tttlrm_ns.synth.gl import RendererUnavailable, osmesa_status

__all__ = ["RendererUnavailable", "osmesa_status"]
