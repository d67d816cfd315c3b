"""The nerfstudio methods of tttlrm_ns: tttLRM's model, pipeline and trainer, the triplane method, splatfacto-cpu."""
