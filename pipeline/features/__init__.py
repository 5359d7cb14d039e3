"""Feature maths as pure functions: audio decoding, Praat prosody, and the choice of speech layers."""
