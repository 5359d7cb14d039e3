"""Many runs from one command: head ablations from one cache (``ablation``) and cross-corpus transfer (``cross``)."""
