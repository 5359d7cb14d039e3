"""The extraction stages (speech, prosody, state), their shared contract (``runner``) and work plans."""
