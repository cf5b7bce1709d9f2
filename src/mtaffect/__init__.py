"""mtaffect: multitask, multi-database facial emotion recognition (7 expressions + valence/arousal).

The pipeline, in the order of the sub-packages:
``labels`` → ``data`` (readers, frame index, face cache, task sets) → ``models`` → ``losses`` →
``train`` (teacher → student, CNN → GRU) → ``metrics``/``evaluate`` → ``predict``.
"""

from mtaffect.labels import EXPRESSIONS

__version__ = "0.1.0"
__all__ = ["EXPRESSIONS", "__version__"]
