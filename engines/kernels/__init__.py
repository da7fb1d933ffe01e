"""Triton kernels for the IAU plugin ops (one source for every GPU target).

Importing this package needs triton (and torch for the launch helpers); nothing in
``runtime/`` imports it. Set TRITON_INTERPRET=1 before the first import to run the
kernels on CPU through Triton's interpreter.
"""
