"""The allocator tweak applies on glibc (this project's Linux machines) and is harmless to call twice."""

from pipeline.runtime.allocator import keep_freed_memory


def test_glibc_accepts_the_thresholds():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
