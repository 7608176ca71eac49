"""Serving: Ray Serve deployments over ONNX Runtime. Never imports torch, peft or training."""

__all__: list[str] = []
