"""Colorization (UViM, the paper's Figure 1c), being built: so far ``reward``, the colourfulness
of Hasler & Süsstrunk (2003). The task (stage I and II models, tokens, judges, notebook
``05_colorization``) and its registry entry come with the shared UViM code."""
