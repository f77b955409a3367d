"""Where TFF computations execute: the local worker tff-dp owns, its remote executor, the native shim.

Imports nothing else of tff_dp: the runtime knows computations, not privacy.
"""
