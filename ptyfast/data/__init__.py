"""Bundled data: the seed paper's probe (``probe_pxy1000.npy``), two held-out cat faces for the demo
(``demo_amplitude.png`` = cat_face_angle95, ``demo_phase.png`` = cat_face_angle97; MIT licence, see
LICENSE-ptynet-data.txt) and the shipped PtyNet-S (``ptynet-s.pt`` / ``.onnx`` / ``.json``, MODEL_CARD.md)."""
