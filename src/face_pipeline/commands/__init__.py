"""The console scripts: ``face-pipeline predict``, ``train`` and ``demo``."""
