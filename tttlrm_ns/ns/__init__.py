"""The nerfstudio methods of tttlrm_ns: tttLRM's model, pipeline and trainer, splatfacto-cpu (the triplane method is
:mod:`tttlrm_ns.triplane.ns`)."""
