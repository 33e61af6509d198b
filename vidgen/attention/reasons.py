"""Refusal reasons shared by the API and the Triton kernel module. They live here, not in ``api``, so that
``triton_kernel`` does not import ``api`` (which imports it back lazily): no import cycle."""

TRITON_CPU_REASON = ("the triton backend needs CUDA tensors; on CPU it runs only under the Triton interpreter "
                     "(set TRITON_INTERPRET=1 before triton is first imported in the process; slow, for tests)")
TRITON_TOKEN_CAUSAL_REASON = ("the triton kernels implement frame-level causality only (causal=True / 'frame'), "
                              "not causal='token'; use backend='reference' or 'flex'")
