"""The probes around LGIP, each as plain functions with explicit parameters (arrays in,
numbers out): semantic certification, embedding matching, zero-shot classification.
"""
