"""Networks the extraction stages run: the speech model wrapper (torch, or its ONNX export in ONNX Runtime), Mamba,
and the dialogue-state updater."""
