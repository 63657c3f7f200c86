"""What every family shares: face detection/alignment/parsing, EVA02-CLIP, weight files and loading,
device policy, and the tiny presets' stand-ins (tokenizer, ONNX models)."""
