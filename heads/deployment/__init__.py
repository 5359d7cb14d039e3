"""A trained run as a self-contained model folder (``model_folder``, ``export``, ``onnx_heads``) and predictions of new recordings with it (``predict``)."""
