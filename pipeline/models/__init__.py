"""Networks the extraction stages run: the speech model wrapper, Mamba, and the dialogue-state updater."""
