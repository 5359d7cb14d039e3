"""From audio files to cached features.

``corpora`` (corpus -> manifest), ``features`` (pure feature maths), ``models`` (networks the stages run),
``stages`` (speech, prosody, state on one contract), ``runtime`` (devices, shards, progress),
``extract`` (run the stages a cache lacks) and ``launch`` (one process, job-array shards or torchrun).
"""
