"""Prior knowledge from a face-recognition network: dlib's face embedding, and its ResNet in Keras."""
