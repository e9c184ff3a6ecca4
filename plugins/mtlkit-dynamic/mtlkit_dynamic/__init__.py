"""mtlkit-dynamic: the dynamic-weight unit of "Dynamic Multi-Task Learning for Face Recognition
with Facial Expression" (Ming et al., arXiv 1911.03281) and the paper's naive-dynamic control."""

__version__ = "0.1.0"
