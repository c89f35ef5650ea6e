"""Pictures and faces without TensorFlow: decoding, detection, alignment, annotation."""
