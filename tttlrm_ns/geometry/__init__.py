"""Measured geometry: plane-sweep stereo (:mod:`.plane_sweep`), the scene's depth range (:mod:`.depth_range`) and
analytic test scenes with exact depth (:mod:`.analytic`)."""
