"""Networks the extraction stages run: the speech model wrapper (torch, or its ONNX export in ONNX Runtime), Mamba,
and the dialogue-state updater (``state_model``) with its cross-fitted training (``state_updater``); and the
dialogue-state kinds, one object each (``state_kinds``)."""
