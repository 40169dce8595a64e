"""Generative models for synthetic training data (CycleGAN, conditional GAN).

NOTE: nothing is implemented here yet; the package exists so the layout and
the dependency direction (augment <- segment <- gan <- studies) are fixed.
"""
